//! What a console command answers: typed columns and rows (psql aligns numbers
//! and shows NULLs as Postgres would), or a command tag.

/// A column's type as the client is told it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Int,
    Float,
    Bool,
}

/// One value.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(Option<String>),
    Int(Option<i64>),
    Float(Option<f64>),
    Bool(Option<bool>),
}

impl Cell {
    pub fn text(s: impl Into<String>) -> Cell {
        Cell::Text(Some(s.into()))
    }

    /// The value as psql prints it (tests and `pgshift status` read this).
    pub fn display(&self) -> Option<String> {
        match self {
            Cell::Text(v) => v.clone(),
            Cell::Int(v) => v.map(|v| v.to_string()),
            Cell::Float(v) => v.map(|v| v.to_string()),
            Cell::Bool(v) => v.map(|v| if v { "t" } else { "f" }.to_string()),
        }
    }
}

/// Rows with their columns.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    pub columns: Vec<(&'static str, Kind)>,
    pub rows: Vec<Vec<Cell>>,
}

/// A command's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Rows(Table),
    /// A command tag, such as `ROLLOUT PAUSE`.
    Done(String),
}

/// A command that failed: SQLSTATE, message, hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    pub code: std::borrow::Cow<'static, str>,
    pub message: String,
    pub hint: String,
}

impl Failed {
    pub fn new(code: &'static str, message: impl Into<String>, hint: impl Into<String>) -> Failed {
        Failed {
            code: code.into(),
            message: message.into(),
            hint: hint.into(),
        }
    }

    /// A failure with the server's SQLSTATE.
    pub fn owned(code: String, message: String, hint: String) -> Failed {
        Failed {
            code: code.into(),
            message,
            hint,
        }
    }
}
