//! The body of every answer that is not a success: `{"kind": .., "message": ..}`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What went wrong, for a program to act on; the message is for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ErrorKind {
    /// 403: the certificate's role may not do this.
    Forbidden,
    /// 404: no such route, job or state.
    NotFound,
    /// 422: the request (a desired state) is not valid; nothing was stored.
    Invalid,
    /// 409: the request conflicts with the agent's state (a job already
    /// running, a generation not awaiting confirmation).
    Conflict,
    /// 409: the generation was rolled back; confirming it is too late.
    RolledBack,
    /// 503: the agent is stopping.
    Unavailable,
    /// 500: the agent failed (its log says more).
    Internal,
    /// A kind this version does not know (a newer agent).
    #[serde(other)]
    Other,
}

impl ErrorKind {
    /// The HTTP status the agent answers with.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::Forbidden => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::Invalid => 422,
            ErrorKind::Conflict | ErrorKind::RolledBack => 409,
            ErrorKind::Unavailable => 503,
            ErrorKind::Internal | ErrorKind::Other => 500,
        }
    }

    /// Whether sending the same request again later can succeed.
    pub fn retry_can_help(self) -> bool {
        matches!(
            self,
            ErrorKind::Unavailable | ErrorKind::Internal | ErrorKind::Conflict
        )
    }
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl fmt::Display) -> ApiError {
        ApiError {
            kind,
            message: message.to_string(),
        }
    }

    /// Reads an error answer. A body that is not an [`ApiError`] (a proxy's
    /// page, an older agent's text) becomes one, its text kept as the
    /// message and its kind taken from the status.
    pub fn from_answer(status: u16, body: &str) -> ApiError {
        if let Ok(error) = serde_json::from_str::<ApiError>(body) {
            return error;
        }
        let kind = match status {
            403 => ErrorKind::Forbidden,
            404 => ErrorKind::NotFound,
            422 => ErrorKind::Invalid,
            409 => ErrorKind::Conflict,
            503 => ErrorKind::Unavailable,
            500 => ErrorKind::Internal,
            _ => ErrorKind::Other,
        };
        let mut message: String = body.trim().chars().take(2000).collect();
        if message.is_empty() {
            message = format!("HTTP {status} with no body");
        }
        ApiError { kind, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_read_back_and_foreign_ones_keep_their_text() {
        let error = ApiError::new(ErrorKind::RolledBack, "generation 4 was rolled back");
        let body = serde_json::to_string(&error).expect("serialize");
        assert_eq!(
            body,
            r#"{"kind":"rolledBack","message":"generation 4 was rolled back"}"#
        );
        assert_eq!(ApiError::from_answer(409, &body), error);
        let foreign = ApiError::from_answer(502, "<html>Bad Gateway</html>\n");
        assert_eq!(foreign.kind, ErrorKind::Other);
        assert_eq!(foreign.message, "<html>Bad Gateway</html>");
        let newer: ApiError =
            serde_json::from_str(r#"{"kind":"quotaExceeded","message":"x"}"#).expect("parse");
        assert_eq!(newer.kind, ErrorKind::Other);
    }
}
