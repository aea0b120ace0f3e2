//! Which database a server opens: the `--database` URL (or `DOORSTEP_DATABASE_URL`).
//!
//! # What this module owns
//!
//! [`DatabaseUrl`]: the parsed form of a database URL, one variant per kind of backend, and
//! the default when none is given (the SQLite file `federation.db` under the data directory).
//!
//! | URL                              | backend                                  |
//! |----------------------------------|------------------------------------------|
//! | `sqlite:PATH`, `sqlite://PATH`   | embedded SQLite, the database file PATH  |
//! | `postgres://…`, `postgresql://…` | PostgreSQL (several nodes may share it)  |
//!
//! # Invariants
//!
//! - Parsing only recognises the kind and keeps what the backend needs; connecting is
//!   [`super::open`]'s job, so adding a backend is one variant here and one arm there.
//! - A URL may hold a password: [`DatabaseUrl`]'s `Display` and every error of this module
//!   name the scheme and path only, never the credentials.

use std::fmt;
use std::path::{Path, PathBuf};

use super::rows::StoreError;

/// File name of the SQLite database in the data directory.
pub const SQLITE_FILE: &str = "federation.db";

/// A database to open.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// The embedded SQLite store in this file.
    Sqlite(PathBuf),
    /// A PostgreSQL server (the URL as given, credentials included).
    Postgres(String),
}

impl DatabaseUrl {
    /// Parse `--database`. `sqlite:` takes the rest as a file path (`sqlite://` too, so
    /// `sqlite:///srv/doorstep.db` is an absolute path).
    pub fn parse(url: &str) -> Result<DatabaseUrl, StoreError> {
        let url = url.trim();
        let (scheme, rest) = url.split_once(':').ok_or_else(|| {
            StoreError::Unsupported(format!(
                "'{}' is not a database URL: use sqlite:PATH (or postgres://...)",
                redacted(url)
            ))
        })?;
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => {
                let path = rest.strip_prefix("//").unwrap_or(rest);
                if path.is_empty() {
                    return Err(StoreError::Unsupported(
                        "sqlite: needs a file path, as in sqlite:/srv/doorstep/federation.db"
                            .into(),
                    ));
                }
                Ok(DatabaseUrl::Sqlite(PathBuf::from(path)))
            }
            "postgres" | "postgresql" => Ok(DatabaseUrl::Postgres(url.to_string())),
            other => Err(StoreError::Unsupported(format!(
                "unknown database URL scheme '{other}:': use sqlite:PATH (or postgres://...)"
            ))),
        }
    }

    /// The default: `DIR/federation.db`.
    pub fn in_data_dir(data_dir: &Path) -> DatabaseUrl {
        DatabaseUrl::Sqlite(data_dir.join(SQLITE_FILE))
    }

    /// `url` when given, else the default under `data_dir`.
    pub fn or_data_dir(url: Option<&str>, data_dir: &Path) -> Result<DatabaseUrl, StoreError> {
        match url {
            Some(url) => DatabaseUrl::parse(url),
            None => Ok(DatabaseUrl::in_data_dir(data_dir)),
        }
    }
}

/// `scheme://host/...` without `user:password@`.
fn redacted(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://***@{}", &url[at + 1..]),
        _ => url.to_string(),
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Sqlite(path) => write!(f, "sqlite:{}", path.display()),
            DatabaseUrl::Postgres(url) => f.write_str(&redacted(url)),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_name_a_file() {
        assert_eq!(
            DatabaseUrl::parse("sqlite:/srv/d/federation.db").unwrap(),
            DatabaseUrl::Sqlite("/srv/d/federation.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:///srv/d.db").unwrap(),
            DatabaseUrl::Sqlite("/srv/d.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("SQLite:rel/d.db").unwrap(),
            DatabaseUrl::Sqlite("rel/d.db".into())
        );
        assert!(DatabaseUrl::parse("sqlite:").is_err());
        assert_eq!(
            DatabaseUrl::or_data_dir(None, Path::new("/data")).unwrap(),
            DatabaseUrl::Sqlite("/data/federation.db".into())
        );
    }

    #[test]
    fn postgres_urls_parse_and_never_show_their_password() {
        let url = DatabaseUrl::parse("postgres://doorstep:s3cret@db.local:5432/fed").unwrap();
        assert!(matches!(url, DatabaseUrl::Postgres(_)));
        assert!(DatabaseUrl::parse("postgresql://db/fed").is_ok());
        let shown = format!("{url} {url:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("db.local:5432/fed"), "{shown}");
    }

    #[test]
    fn other_urls_are_refused_without_echoing_credentials() {
        let e = DatabaseUrl::parse("mysql://root:hunter2@db/fed").unwrap_err();
        assert!(
            e.to_string()
                .contains("unknown database URL scheme 'mysql:'")
        );
        assert!(!e.to_string().contains("hunter2"));
        let e = DatabaseUrl::parse("federation.db").unwrap_err().to_string();
        assert!(e.contains("not a database URL"), "{e}");
    }
}
