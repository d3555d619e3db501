//! The control protocol, typed: one JSON request per connection (`{"request": "status"}`,
//! `{"request": "reload"}`, `{"request": "reconnect", "host": NAME}`, `{"request": "upgrade"}`)
//! and one JSON answer
//! (`{"ok": true, ...}` or `{"ok": false, "error": ...}`).

use serde::{Deserialize, Serialize};

use super::status::StatusDoc;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "lowercase")]
pub enum Request {
    /// The status document.
    Status,
    /// Re-read the configuration file and apply the difference.
    Reload,
    /// Replace one host's session now.
    Reconnect {
        /// The host's name.
        host: String,
    },
    /// Hand everything over to a new process of the binary (upgrade in place).
    Upgrade,
}

/// A request as it may arrive: anything with a `request` field (so that an unknown or
/// missing one gets its own answer, not a parser's).
#[derive(Deserialize)]
struct Wire {
    request: Option<String>,
    host: Option<String>,
}

impl Request {
    /// Reads one request line; the error is the answer's text.
    pub fn parse(line: &str) -> Result<Self, String> {
        let wire: Wire = serde_json::from_str(line)
            .map_err(|_| "malformed request: expected one JSON object".to_string())?;
        match wire.request.as_deref() {
            Some("status") => Ok(Self::Status),
            Some("reload") => Ok(Self::Reload),
            Some("upgrade") => Ok(Self::Upgrade),
            Some("reconnect") => match wire.host {
                Some(host) => Ok(Self::Reconnect { host }),
                None => Err("a reconnect request names no \"host\"".into()),
            },
            Some(other) => Err(format!("unsupported request \"{other}\"")),
            None => Err("the request names no \"request\"".into()),
        }
    }
}

/// The daemon's answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request was carried out.
    pub ok: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusDoc>,
    /// For `reload`: what changed, one line each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<Vec<String>>,
    /// For a rejected `reload`: the problems of the new file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problems: Option<Vec<String>>,
    /// For `upgrade`: the new process.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
}

impl Response {
    /// Carried out, nothing more to say.
    pub fn done() -> Self {
        Self {
            ok: true,
            ..Self::default()
        }
    }

    /// Not carried out, because of `error`.
    pub fn refused(error: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(error.into()),
            ..Self::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_and_write_as_the_wire_shows_them() {
        for (line, request) in [
            (r#"{"request":"status"}"#, Request::Status),
            (r#"{"request":"reload"}"#, Request::Reload),
            (
                r#"{"request":"reconnect","host":"db"}"#,
                Request::Reconnect { host: "db".into() },
            ),
        ] {
            assert_eq!(Request::parse(line), Ok(request.clone()));
            assert_eq!(serde_json::to_string(&request).unwrap(), line);
        }
        assert_eq!(
            Request::parse("not json"),
            Err("malformed request: expected one JSON object".into())
        );
        assert_eq!(
            Request::parse(r#"{"request":"format c:"}"#),
            Err("unsupported request \"format c:\"".into())
        );
        assert_eq!(
            Request::parse(r#"{"host":"db"}"#),
            Err("the request names no \"request\"".into())
        );
        assert!(Request::parse(r#"{"request":"reconnect"}"#).is_err());
        assert_eq!(
            serde_json::to_string(&Response::refused("unknown host")).unwrap(),
            r#"{"ok":false,"error":"unknown host"}"#
        );
    }
}
