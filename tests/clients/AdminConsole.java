// The admin console through PgJDBC: one prepared command run past
// prepareThreshold (binary results from then on), printing what it read.
// Usage: java -cp postgresql.jar AdminConsole.java <jdbc url> <password> <command>
import java.sql.*;

public class AdminConsole {
    public static void main(String[] args) throws Exception {
        java.util.Properties props = new java.util.Properties();
        props.setProperty("user", "admin");
        props.setProperty("password", args[1]);
        props.setProperty("prepareThreshold", "2");
        try (Connection c = DriverManager.getConnection(args[0], props);
             PreparedStatement st = c.prepareStatement(args[2])) {
            String last = "";
            for (int i = 0; i < 5; i++) {
                try (ResultSet rs = st.executeQuery()) {
                    rs.next();
                    last = rs.getString("phase") + " " + rs.getLong("id") + " "
                        + rs.getDouble("progress_pct") + " " + rs.getBoolean("paused");
                }
            }
            System.out.println(last);
        }
    }
}
