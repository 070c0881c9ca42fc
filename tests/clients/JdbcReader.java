// Reads through pgshift with PgJDBC: one PreparedStatement, executed as fast as it
// goes until the file named by the second argument exists (after 20 reads it makes
// that name with ".ready" added), each read in a
// transaction of its own (with autocommit on, PgJDBC prepares again and retries by
// itself after "cached plan must not change result type"; inside a transaction it
// cannot). Past prepareThreshold (5) PgJDBC uses a named server-side statement,
// keeps the column types it was told, and reads int4 in binary. Prints: reads,
// errors, wrong values, first messages.
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.List;

public class JdbcReader {
    public static void main(String[] args) throws Exception {
        Path stop = Path.of(args[1]);
        Path ready = Path.of(args[1] + ".ready");
        long reads = 0, errors = 0, wrong = 0;
        List<String> messages = new ArrayList<>();
        try (Connection conn = DriverManager.getConnection(args[0]);
             PreparedStatement ps = conn.prepareStatement(
                 "SELECT id, amount FROM orders WHERE id = ?")) {
            conn.setAutoCommit(false);
            while (!Files.exists(stop)) {
                long key = 1 + reads % 1000;
                try {
                    ps.setLong(1, key);
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        if (rs.getLong(1) != key || rs.getInt(2) != key % 1000) {
                            wrong++;
                            messages.add(key + ": " + rs.getLong(1) + " " + rs.getInt(2));
                        }
                    }
                    conn.commit();
                } catch (SQLException e) {
                    errors++;
                    messages.add(e.getSQLState() + " " + e.getMessage());
                    conn.rollback();
                }
                reads++;
                if (reads == 20) {
                    Files.writeString(ready, "");
                }
            }
        }
        System.out.println(reads + " " + errors + " " + wrong + " "
            + messages.subList(0, Math.min(3, messages.size())));
    }
}
