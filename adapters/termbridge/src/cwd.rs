//! Checks on a working directory a client asks a pane to start in.

use std::path::PathBuf;

use crate::error::{Result, TermError};

/// Linux's PATH_MAX: no longer path can be passed to chdir.
pub const MAX_CWD_BYTES: usize = 4096;

/// The directory as a path, if it is absolute, valid UTF-8, at most
/// [`MAX_CWD_BYTES`] and free of control characters (which would end up in
/// a terminal's command line or title and could carry escapes). Whether it
/// exists is left to the terminal: it may be on another host.
pub fn validate_cwd(bytes: &[u8]) -> Result<PathBuf> {
    if bytes.is_empty() {
        return Err(TermError::Invalid("the working directory is empty".into()));
    }
    if bytes.len() > MAX_CWD_BYTES {
        return Err(TermError::Invalid(format!(
            "the working directory is {} bytes long; at most {MAX_CWD_BYTES} are allowed",
            bytes.len()
        )));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| TermError::Invalid("the working directory is not valid UTF-8".into()))?;
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        return Err(TermError::Invalid(format!("the working directory contains the control character {:?}", c)));
    }
    if !text.starts_with('/') {
        return Err(TermError::Invalid("the working directory is not an absolute path".into()));
    }
    Ok(PathBuf::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_absolute_paths() {
        assert_eq!(validate_cwd(b"/home/me/src").unwrap(), PathBuf::from("/home/me/src"));
        assert_eq!(validate_cwd("/tmp/ünï code".as_bytes()).unwrap(), PathBuf::from("/tmp/ünï code"));
        assert!(validate_cwd(&[b'/'; MAX_CWD_BYTES]).is_ok());
    }

    #[test]
    fn refuses_relative_empty_long_controls_and_bad_utf8() {
        for bad in [
            &b""[..],
            b"relative/dir",
            b"~/x",
            b"/tmp/\x1b]0;x\x07",
            b"/tmp/a\nb",
            b"/tmp/\0",
            b"/tmp/\xff",
            "/tmp/\u{85}".as_bytes(),
        ] {
            assert!(matches!(validate_cwd(bad), Err(TermError::Invalid(_))), "{bad:?}");
        }
        assert!(matches!(validate_cwd(&[b'/'; MAX_CWD_BYTES + 1]), Err(TermError::Invalid(_))));
    }
}
