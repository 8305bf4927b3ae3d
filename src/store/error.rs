//! What a store operation can answer besides success: its [`Error`]s (each with the status a
//! node answers) and the two outcomes of a create ([`Created`]). Shared by the store and its
//! writer, so it sits below both.

use crate::booking::Invalid;
use rusqlite::ErrorCode;
use std::fmt;

/// What can go wrong with a store operation, each with the status a node answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    NotFound,
    /// A booking with this id already exists (409).
    Exists(String),
    /// An `Idempotency-Key` was reused with a different body (422).
    KeyReused,
    /// A PATCH produced an invalid booking (400).
    Invalid(Invalid),
    /// Another writer held the database past [`BUSY_TIMEOUT`](super::connection::BUSY_TIMEOUT) (503).
    Busy,
    /// Anything else SQLite reported (500).
    Database(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotFound => f.write_str("no booking has that id"),
            Error::Exists(id) => write!(f, "a booking with id '{id}' already exists"),
            Error::KeyReused => f.write_str(
                "this Idempotency-Key was already used with a different body; use a new key",
            ),
            Error::Invalid(invalid) => write!(f, "{invalid}"),
            Error::Busy => f.write_str("the database is busy; try again in a moment"),
            Error::Database(message) => write!(f, "database error: {message}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<rusqlite::Error> for Error {
    fn from(error: rusqlite::Error) -> Error {
        match error.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Error::Busy,
            _ => Error::Database(error.to_string()),
        }
    }
}

/// The outcome of a create.
#[derive(Debug, Clone, PartialEq)]
pub enum Created {
    /// A new row; the booking's JSON.
    New(String),
    /// A repeat of an earlier request with the same `Idempotency-Key` and body:
    /// its stored status and JSON, and nothing was written.
    Replayed {
        status: u16,
        body: String,
        booking_id: String,
    },
}
