//! Writing shell text: quoting words, checking variable names, exporting a manager's
//! environment. Every provider writes its scripts with these, so a value that is safe in one
//! provider's script is safe in all of them.

use std::borrow::Cow;
use std::ffi::OsStr;

use funcx_core::{ManagerCommand, ProviderError};

/// Quotes `word` for a POSIX shell, so the shell passes it on as exactly one argument
/// whatever it contains (spaces, quotes, `$`, newlines, globs).
///
/// Single quotes keep everything literal except a single quote itself, which is written as
/// `'\''` (end the quoted part, an escaped quote, start a new quoted part). Words made only
/// of characters no shell treats specially are left bare, for readable scripts; `=` is not
/// among them, since a first word with `=` would be taken for an assignment.
///
/// ```
/// use funcx_providers::shell_quote;
///
/// assert_eq!(shell_quote("--workers"), "--workers");
/// assert_eq!(shell_quote("A=1"), "'A=1'");
/// assert_eq!(shell_quote("it's $HOME"), r#"'it'\''s $HOME'"#);
/// assert_eq!(shell_quote(""), "''");
/// ```
pub fn shell_quote(word: &str) -> String {
    match quote_bytes(word.as_bytes()) {
        Cow::Borrowed(_) => word.to_string(),
        // Quoting only adds ASCII around and inside UTF-8 text, which stays UTF-8.
        Cow::Owned(quoted) => String::from_utf8_lossy(&quoted).into_owned(),
    }
}

/// [`shell_quote`] for bytes that need not be UTF-8 (a shell takes any bytes but NUL), for
/// scripts that are bytes, such as EC2 user data.
pub(crate) fn quote_bytes(word: &[u8]) -> Cow<'_, [u8]> {
    let plain = |b: &u8| b.is_ascii_alphanumeric() || b"-_./:,+@%".contains(b);
    if !word.is_empty() && word.iter().all(plain) {
        return Cow::Borrowed(word);
    }
    let mut quoted = Vec::with_capacity(word.len() + 2);
    quoted.push(b'\'');
    for &byte in word {
        if byte == b'\'' {
            quoted.extend_from_slice(b"'\\''");
        } else {
            quoted.push(byte);
        }
    }
    quoted.push(b'\'');
    Cow::Owned(quoted)
}

/// A name the shell accepts after `export`: letters, digits and `_`, not starting with a
/// digit.
pub(crate) fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A batch script is text, so a part of the manager command that is not UTF-8 cannot be
/// written into one; `what` names the part for the error.
pub(crate) fn text<'s>(what: &str, value: &'s OsStr) -> Result<&'s str, ProviderError> {
    value.to_str().ok_or_else(|| {
        ProviderError::rejected(format!(
            "the manager command's {what} {value:?} is not UTF-8, so it cannot be written into a batch script"
        ))
    })
}

/// Whether a script must be text (a batch script) or may hold any bytes (user data).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// Every value must be UTF-8.
    Text,
    /// Values may be any bytes; names must still be shell variable names.
    // Only the EC2 provider's user data is bytes.
    #[cfg_attr(not(feature = "ec2"), allow(dead_code))]
    Bytes,
}

fn checked<'s>(
    what: &str,
    value: &'s OsStr,
    encoding: Encoding,
) -> Result<&'s [u8], ProviderError> {
    match encoding {
        Encoding::Text => Ok(text(what, value)?.as_bytes()),
        Encoding::Bytes => Ok(value.as_encoded_bytes()),
    }
}

/// One `export NAME=value` line per variable of the manager command's environment, values
/// quoted. A name the shell cannot export is refused rather than dropped.
pub(crate) fn exports(
    command: &ManagerCommand,
    encoding: Encoding,
) -> Result<Vec<u8>, ProviderError> {
    let mut lines = Vec::new();
    for (key, value) in command.environment() {
        let key = key
            .to_str()
            .filter(|key| is_variable_name(key))
            .ok_or_else(|| {
                ProviderError::rejected(format!(
                    "the manager command's environment variable name {key:?} cannot be exported by a shell"
                ))
            })?;
        lines.extend_from_slice(format!("export {key}=").as_bytes());
        lines.extend_from_slice(&quote_bytes(checked("environment value", value, encoding)?));
        lines.push(b'\n');
    }
    Ok(lines)
}

/// The manager command as shell words: its program, then its arguments, each quoted.
pub(crate) fn command_words(
    command: &ManagerCommand,
    encoding: Encoding,
) -> Result<Vec<u8>, ProviderError> {
    let mut words =
        quote_bytes(checked("program", command.program().as_os_str(), encoding)?).into_owned();
    for arg in command.arguments() {
        words.push(b' ');
        words.extend_from_slice(&quote_bytes(checked("argument", arg, encoding)?));
    }
    Ok(words)
}

/// [`exports`] for a text script.
pub(crate) fn export_text(command: &ManagerCommand) -> Result<String, ProviderError> {
    into_text(exports(command, Encoding::Text)?)
}

/// [`command_words`] for a text script.
pub(crate) fn command_text(command: &ManagerCommand) -> Result<String, ProviderError> {
    into_text(command_words(command, Encoding::Text)?)
}

fn into_text(bytes: Vec<u8>) -> Result<String, ProviderError> {
    // Built from checked UTF-8 and ASCII only; an error here would be a bug, reported
    // rather than panicking.
    String::from_utf8(bytes).map_err(|_| ProviderError::rejected("the script is not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `sh -c 'printf "%s" <quoted>'` and returns what the shell made of the word.
    fn through_the_shell(word: &str) -> String {
        let output = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("printf '%s' {}", shell_quote(word)))
            .output()
            .expect("run /bin/sh");
        assert!(output.status.success());
        String::from_utf8(output.stdout).expect("utf-8")
    }

    #[test]
    fn quoting_survives_nasty_strings() {
        for word in [
            "",
            " ",
            "plain",
            "two words",
            "it's",
            "''",
            "'\\''",
            "$HOME",
            "${PATH}",
            "`id`",
            "$(id)",
            "a\nb",
            "tab\there",
            "*",
            "~",
            "!",
            "\\",
            "\"quoted\"",
            "; rm -rf / #",
            "a|b&c>d<e",
            "ünïcødé ✓",
            "-n",
            "A=1",
            "#not a comment",
            "glob * ? [a-z]",
            "!history !!",
            "back\\slash\\",
            "a;b|c&d",
            "~user",
            "$HOME ${X:-y}",
            "--endpoint=10.0.0.1:9000",
        ] {
            assert_eq!(through_the_shell(word), word, "quoting {word:?}");
        }
    }

    #[test]
    fn plain_words_stay_readable() {
        assert_eq!(shell_quote("/opt/funcx-manager"), "/opt/funcx-manager");
        assert_eq!(shell_quote("127.0.0.1:9000"), "127.0.0.1:9000");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("~"), "'~'");
        assert_eq!(&*quote_bytes(b"x=\xff"), b"'x=\xff'");
    }

    #[test]
    fn variable_names() {
        assert!(is_variable_name("_A1"));
        assert!(!is_variable_name("1A"));
        assert!(!is_variable_name(""));
        assert!(!is_variable_name("A-B"));
    }

    #[cfg(unix)]
    #[test]
    fn text_scripts_refuse_what_bytes_scripts_take() {
        use std::os::unix::ffi::OsStrExt;
        let command = ManagerCommand::new("x").env("TOKEN", OsStr::from_bytes(b"\xff'"));
        assert!(export_text(&command)
            .unwrap_err()
            .to_string()
            .contains("not UTF-8"));
        assert_eq!(
            exports(&command, Encoding::Bytes).expect("bytes"),
            b"export TOKEN='\xff'\\'''\n"
        );
        let bad_name = ManagerCommand::new("x").env("NOT A NAME", "1");
        assert!(exports(&bad_name, Encoding::Bytes)
            .unwrap_err()
            .is_rejected());
    }
}
