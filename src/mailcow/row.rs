//! Reading rows without a panic. The mysql crate's typed reads (`exec_first::<(String, i64)>`,
//! `FromRow::from_row`) panic when a column's value does not convert; here a
//! row is read as it comes and taken apart column by column, and a value of
//! an unexpected type is a [`StoreError::Column`] naming the table and column
//! (a temporary failure: the schema is not the one this tool was built for).

use super::error::StoreError;
use mysql::prelude::{FromValue, Queryable};
use mysql::{Params, Row, Value};

/// One row of `table`, read column by column in the order of the SELECT.
pub(super) struct Columns {
    table: &'static str,
    row: Row,
    next: usize,
}

impl Columns {
    pub(super) fn new(table: &'static str, row: Row) -> Columns {
        Columns {
            table,
            row,
            next: 0,
        }
    }

    /// The same row, its further columns named as columns of `table` in errors.
    pub(super) fn with_table(self, table: &'static str) -> Columns {
        Columns { table, ..self }
    }

    /// The next column as `T` (an `Option` for a column that may be NULL).
    pub(super) fn next<T: FromValue>(&mut self, column: &'static str) -> Result<T, StoreError> {
        let i = self.next;
        self.next += 1;
        let found = match self.row.as_ref(i) {
            None => "no value",
            Some(v) => kind(v),
        };
        match self.row.take_opt::<T, usize>(i) {
            Some(Ok(v)) => Ok(v),
            _ => Err(StoreError::Column {
                table: self.table,
                column,
                expected: expected::<T>(),
                found,
            }),
        }
    }
}

/// The first row `sql` returns, if any.
pub(super) fn first<Q: Queryable>(
    q: &mut Q,
    table: &'static str,
    sql: &str,
    params: impl Into<Params>,
) -> Result<Option<Columns>, StoreError> {
    let row: Option<Row> = q.exec_first(sql, params)?;
    Ok(row.map(|r| Columns::new(table, r)))
}

/// Every row `sql` returns.
pub(super) fn all<Q: Queryable>(
    q: &mut Q,
    table: &'static str,
    sql: &str,
    params: impl Into<Params>,
) -> Result<Vec<Columns>, StoreError> {
    let rows: Vec<Row> = q.exec(sql, params)?;
    Ok(rows.into_iter().map(|r| Columns::new(table, r)).collect())
}

/// Every row of a statement without parameters (the text protocol: no
/// prepared statement, one round trip).
pub(super) fn all_text<Q: Queryable>(
    q: &mut Q,
    table: &'static str,
    sql: &str,
) -> Result<Vec<Columns>, StoreError> {
    let rows: Vec<Row> = q.query(sql)?;
    Ok(rows.into_iter().map(|r| Columns::new(table, r)).collect())
}

/// A value's kind in words (never the value: it may be a password hash).
fn kind(v: &Value) -> &'static str {
    match v {
        Value::NULL => "NULL",
        Value::Bytes(_) => "text",
        Value::Int(_) | Value::UInt(_) => "an integer",
        Value::Float(_) | Value::Double(_) => "a floating-point number",
        Value::Date(..) => "a date",
        Value::Time(..) => "a time",
    }
}

fn expected<T>() -> &'static str {
    let name = std::any::type_name::<T>();
    let or_null = name.starts_with("core::option::Option<");
    let base = if name.contains("String") {
        "text"
    } else if ["i64", "u64", "i32", "u32", "i8", "u8", "i16", "u16"]
        .iter()
        .any(|t| name.ends_with(t) || name.ends_with(&format!("{t}>")))
    {
        "an integer"
    } else {
        return name;
    };
    match (base, or_null) {
        ("text", false) => "text",
        ("text", true) => "text or NULL",
        (_, false) => "an integer",
        (_, true) => "an integer or NULL",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_types_in_words() {
        assert_eq!(expected::<i64>(), "an integer");
        assert_eq!(expected::<Option<i64>>(), "an integer or NULL");
        assert_eq!(expected::<String>(), "text");
        assert_eq!(expected::<Option<String>>(), "text or NULL");
    }

    #[test]
    fn kinds_never_show_the_value() {
        assert_eq!(kind(&Value::Bytes(b"$2y$secret".to_vec())), "text");
        assert_eq!(kind(&Value::NULL), "NULL");
    }
}
