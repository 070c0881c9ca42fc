//! pgshift's own columns, kept out of results. During a rollout the table has a
//! column the application does not know of: before the cutover the new one
//! (`<col>__pgshift_new`, last), after it the old one (`<col>__pgshift_old`,
//! where the column stood, with the new `<col>` last). Directly, `SELECT *`
//! shows neither: before the ALTER the table has the old column, after it the
//! column with its new type where it stood. So a result's columns are mapped:
//! a new column is left out, an old one is replaced by its twin (the new column
//! of the same name and table), which moves there from the end.
//!
//! Pure functions on message bodies; the server's scanner applies them to each
//! RowDescription and to the DataRows of a result whose description mapped.

/// Name endings of the columns a rollout adds (see `rollout::model::parked_name`).
const NEW_SUFFIX: &[u8] = b"__pgshift_new";
const OLD_SUFFIX: &[u8] = b"__pgshift_old";
/// Longest identifier; a parked name is clipped to fit (at a char boundary).
const MAX_IDENT: usize = 63;

/// Which fields of a result the client sees, in the order it sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// Fields in the server's row.
    from: usize,
    /// Per field the client sees: its index in the server's row.
    out: Vec<usize>,
}

impl Mapping {
    /// From each field's name and table (0: not a table's column); None when no
    /// field is pgshift's.
    pub fn of(fields: &[(&[u8], u32)]) -> Option<Mapping> {
        let ours = |i: usize| {
            let (name, table) = fields[i];
            table != 0 && (name.ends_with(NEW_SUFFIX) || name.ends_with(OLD_SUFFIX))
        };
        if !(0..fields.len()).any(ours) {
            return None;
        }
        let mut moved = vec![false; fields.len()];
        let mut out = Vec::with_capacity(fields.len());
        for (i, &(name, table)) in fields.iter().enumerate() {
            if moved[i] {
                continue;
            }
            if !ours(i) {
                out.push(i);
                continue;
            }
            let Some(base) = name.strip_suffix(OLD_SUFFIX) else {
                continue;
            };
            let clipped = name.len() + 3 >= MAX_IDENT;
            let twin = (i + 1..fields.len()).find(|&j| {
                let (other, t) = fields[j];
                t == table
                    && !ours(j)
                    && !moved[j]
                    && (other == base || clipped && other.starts_with(base))
            });
            if let Some(j) = twin {
                moved[j] = true;
                out.push(j);
            }
        }
        Some(Mapping {
            from: fields.len(),
            out,
        })
    }

    /// From the columns of a RowDescription; None when none is pgshift's.
    pub fn of_fields(fields: &[super::backend::Field]) -> Option<Mapping> {
        let named: Vec<(&[u8], u32)> = fields
            .iter()
            .map(|f| (f.name.as_bytes(), f.table))
            .collect();
        Mapping::of(&named)
    }

    /// Fields in the server's row.
    pub fn from(&self) -> usize {
        self.from
    }

    /// Per field the client sees: its index in the server's row.
    pub fn out(&self) -> &[usize] {
        &self.out
    }

    /// From a RowDescription body; None when no field is pgshift's (or the body
    /// is malformed: it goes as it came).
    pub fn of_row_description(body: &[u8]) -> Option<Mapping> {
        let fields = fields(body)?;
        let named: Vec<(&[u8], u32)> = fields.iter().map(|f| (f.name, f.table)).collect();
        Mapping::of(&named)
    }

    /// Writes to `frame` the RowDescription frame the client gets for `body`;
    /// false when the body is not the one this mapping was made from.
    pub fn row_description(&self, body: &[u8], frame: &mut Vec<u8>) -> bool {
        let Some(fields) = fields(body).filter(|f| f.len() == self.from) else {
            return false;
        };
        self.write(b'T', frame, |i| fields[i].bytes);
        true
    }

    /// Writes to `frame` the DataRow frame the client gets for `body`; false
    /// when the row does not have the fields the description had (it goes as it
    /// came).
    pub fn data_row(&self, body: &[u8], frame: &mut Vec<u8>) -> bool {
        let Some(values) = values(body, self.from) else {
            return false;
        };
        self.write(b'D', frame, |i| values[i]);
        true
    }

    fn write<'a>(&self, tag: u8, frame: &mut Vec<u8>, part: impl Fn(usize) -> &'a [u8]) {
        frame.clear();
        frame.push(tag);
        frame.extend_from_slice(&[0; 4]);
        frame.extend_from_slice(&(self.out.len() as u16).to_be_bytes());
        for &i in &self.out {
            frame.extend_from_slice(part(i));
        }
        let len = (frame.len() - 1) as u32;
        frame[1..5].copy_from_slice(&len.to_be_bytes());
    }
}

/// One field of a RowDescription: its bytes (name to format code), name, table.
struct FieldBytes<'a> {
    bytes: &'a [u8],
    name: &'a [u8],
    table: u32,
}

/// A RowDescription's fields; None when the body is malformed.
fn fields(body: &[u8]) -> Option<Vec<FieldBytes<'_>>> {
    let n = u16::from_be_bytes([*body.first()?, *body.get(1)?]) as usize;
    let mut at = 2;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let rest = body.get(at..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        let len = end + 1 + 18;
        let bytes = rest.get(..len)?;
        let table = super::be_u32(bytes, end + 1);
        out.push(FieldBytes {
            bytes,
            name: &rest[..end],
            table,
        });
        at += len;
    }
    (at == body.len()).then_some(out)
}

/// A DataRow's values, each with its length word; None unless it has `count`.
fn values(body: &[u8], count: usize) -> Option<Vec<&[u8]>> {
    let n = u16::from_be_bytes([*body.first()?, *body.get(1)?]) as usize;
    if n != count {
        return None;
    }
    let mut at = 2;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = i32::from_be_bytes(body.get(at..at + 4)?.try_into().ok()?);
        let total = 4 + usize::try_from(len).unwrap_or(0);
        out.push(body.get(at..at + total)?);
        at += total;
    }
    (at == body.len()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(m: &Mapping, fields: &[(&[u8], u32)]) -> Vec<String> {
        m.out
            .iter()
            .map(|&i| String::from_utf8_lossy(fields[i].0).into_owned())
            .collect()
    }

    #[test]
    fn the_new_column_is_left_out_and_the_old_one_takes_its_twin() {
        let before: &[(&[u8], u32)] = &[
            (b"id", 7),
            (b"amount", 7),
            (b"note", 7),
            (b"amount__pgshift_new", 7),
            (b"x", 0),
        ];
        let m = Mapping::of(before).unwrap();
        assert_eq!(names(&m, before), ["id", "amount", "note", "x"]);
        let after: &[(&[u8], u32)] = &[
            (b"id", 7),
            (b"amount__pgshift_old", 7),
            (b"note", 7),
            (b"amount", 7),
            (b"amount", 9),
        ];
        let m = Mapping::of(after).unwrap();
        assert_eq!(names(&m, after), ["id", "amount", "note", "amount"]);
        assert_eq!(m.out, [0, 3, 2, 4]);
        // No twin (the statement did not select it): the old column goes.
        let alone: &[(&[u8], u32)] = &[(b"amount__pgshift_old", 7), (b"amount", 9)];
        assert_eq!(Mapping::of(alone).unwrap().out, [1]);
        // Nothing of pgshift's, or a name alike that is no table's column.
        assert_eq!(Mapping::of(&[(b"id", 7), (b"a__pgshift_new", 0)]), None);
    }

    #[test]
    fn a_clipped_old_name_finds_its_twin() {
        let column = "c".repeat(60);
        let old = format!("{}__pgshift_old", &column[..50]);
        let fields: &[(&[u8], u32)] = &[(old.as_bytes(), 1), (column.as_bytes(), 1)];
        assert_eq!(Mapping::of(fields).unwrap().out, [1]);
    }

    fn field(name: &str, table: u32) -> Vec<u8> {
        let mut f = name.as_bytes().to_vec();
        f.push(0);
        f.extend_from_slice(&table.to_be_bytes());
        f.extend_from_slice(&[0, 1, 0, 0, 0, 23, 0, 4, 255, 255, 255, 255, 0, 0]);
        f
    }

    fn body(count: u16, parts: &[Vec<u8>]) -> Vec<u8> {
        let mut b = count.to_be_bytes().to_vec();
        parts.iter().for_each(|p| b.extend_from_slice(p));
        b
    }

    fn value(v: Option<&str>) -> Vec<u8> {
        match v {
            None => (-1i32).to_be_bytes().to_vec(),
            Some(v) => {
                let mut out = (v.len() as i32).to_be_bytes().to_vec();
                out.extend_from_slice(v.as_bytes());
                out
            }
        }
    }

    #[test]
    fn frames_are_rewritten_field_by_field() {
        let t = body(
            3,
            &[
                field("id", 5),
                field("amount__pgshift_old", 5),
                field("amount", 5),
            ],
        );
        let m = Mapping::of_row_description(&t).unwrap();
        let mut frame = Vec::new();
        assert!(m.row_description(&t, &mut frame));
        assert_eq!(frame[0], b'T');
        assert_eq!(frame[1..5], ((frame.len() - 1) as u32).to_be_bytes());
        assert_eq!(frame[5..], body(2, &[field("id", 5), field("amount", 5)]));
        let d = body(3, &[value(Some("1")), value(None), value(Some("42"))]);
        assert!(m.data_row(&d, &mut frame));
        assert_eq!(frame[0], b'D');
        assert_eq!(frame[1..5], ((frame.len() - 1) as u32).to_be_bytes());
        assert_eq!(frame[5..], body(2, &[value(Some("1")), value(Some("42"))]));
        // A row of another shape, or a malformed one, goes as it came.
        assert!(!m.data_row(&body(2, &[value(None), value(None)]), &mut frame));
        assert!(!m.data_row(&d[..d.len() - 1], &mut frame));
        assert_eq!(Mapping::of_row_description(&t[..t.len() - 1]), None);
    }
}
