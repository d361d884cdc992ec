//! Time travel on managed tables, in Delta's spelling:
//!
//! ```sql
//! SELECT * FROM mart.daily VERSION AS OF 3;
//! SELECT * FROM mart.daily TIMESTAMP AS OF '2026-12-01 10:00:00';
//! ```
//!
//! sqlparser reads these clauses only in some dialects, DataFusion's planner ignores them
//! where it does, and DataFusion resolves a statement's tables by name alone before planning
//! (the catalog's lookup is where a version's log is read, asynchronously). So the clause
//! travels with the table's name through that lookup, as a [`TableAt`] (folded in by
//! [`super::prepass`]): the name, a control character and the version. No catalog name can
//! hold a control character (they are refused when objects are created), so a table's own
//! name is never read as a version: a table named `orders@v2` is itself.

/// Which version of a table a name asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AsOf {
    Version(u64),
    /// A timestamp as written: the latest version committed at or before it.
    Timestamp(String),
}

/// Separates a table's name from the version it is read at; catalog names cannot hold it.
const MARK: char = '\u{1}';

/// A table's name and the version a statement reads it at, as DataFusion's table lookup
/// carries it (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableAt<'a> {
    pub name: &'a str,
    pub as_of: Option<AsOf>,
}

impl<'a> TableAt<'a> {
    /// The name the lookup sees.
    pub(crate) fn encode(name: &str, as_of: &AsOf) -> String {
        match as_of {
            AsOf::Version(v) => format!("{name}{MARK}v{v}"),
            AsOf::Timestamp(t) => format!("{name}{MARK}ts{t}"),
        }
    }

    /// A looked-up name taken apart again; a name without the mark is the table itself.
    pub(crate) fn decode(name: &'a str) -> TableAt<'a> {
        let Some((table, at)) = name.split_once(MARK) else {
            return TableAt { name, as_of: None };
        };
        let as_of = match (at.strip_prefix("ts"), at.strip_prefix('v')) {
            (Some(timestamp), _) => Some(AsOf::Timestamp(timestamp.to_string())),
            (None, Some(version)) => version.parse().ok().map(AsOf::Version),
            (None, None) => None,
        };
        match as_of {
            Some(as_of) => TableAt {
                name: table,
                as_of: Some(as_of),
            },
            // Not ours: looked up as written, and not found.
            None => TableAt { name, as_of: None },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_versions_only_after_the_mark() {
        let at = |name, as_of| TableAt { name, as_of };
        assert_eq!(
            TableAt::decode("daily\u{1}v3"),
            at("daily", Some(AsOf::Version(3)))
        );
        assert_eq!(
            TableAt::decode("t\u{1}ts2026-12-01"),
            at("t", Some(AsOf::Timestamp("2026-12-01".into())))
        );
        assert_eq!(TableAt::decode("plain"), at("plain", None));
        // A table's own name is never a version.
        assert_eq!(TableAt::decode("orders@v2"), at("orders@v2", None));
        assert_eq!(TableAt::decode("orders@ts2026"), at("orders@ts2026", None));
        assert_eq!(TableAt::decode("t\u{1}x"), at("t\u{1}x", None));
    }
}
