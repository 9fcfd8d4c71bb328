//! `fulmar passwd`: makes and edits password files in mosquitto_passwd's
//! format, with its flags, so that a fulmar installation needs no mosquitto
//! tools, and the files serve either broker.

use std::io::Write;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use clap::Args;

use crate::passwd::{HashKind, hash_password, is_hash};

/// The longest password MQTT can carry (a CONNECT's Password field).
const MAX_PASSWORD: usize = 65_535;

#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    fulmar passwd -c /etc/fulmar/passwd alice      (a new file, the password asked for)\n  \
    fulmar passwd -b /etc/fulmar/passwd bob secret (add or change a user)\n  \
    fulmar passwd -D /etc/fulmar/passwd bob        (remove a user)\n  \
    fulmar passwd -U passwords.txt                 (hash a file of user:password lines)\n\n\
    The file is read by `fulmar broker` ([auth] password_file, or mosquitto.conf's \
    password_file) and by mosquitto 2.0. The broker reads it again on SIGHUP.")]
pub(crate) struct PasswdArgs {
    /// Create a new password file (an existing one is overwritten).
    #[arg(short = 'c', conflicts_with_all = ["delete", "update"])]
    create: bool,
    /// Delete USER instead of setting a password.
    #[arg(short = 'D', conflicts_with_all = ["update", "batch"])]
    delete: bool,
    /// Batch mode: the password is the last argument instead of being asked
    /// for (it shows in the process list and the shell's history).
    #[arg(short = 'b')]
    batch: bool,
    /// Hash the plain-text passwords of FILE (lines `user:password`) in place.
    #[arg(short = 'U', conflicts_with_all = ["create", "delete", "batch"])]
    update: bool,
    /// The hash: `sha512-pbkdf2` ($7$, the default) or `sha512` ($6$,
    /// mosquitto 1.x's, weak).
    #[arg(short = 'H', value_name = "HASH", default_value = "sha512-pbkdf2")]
    hash: String,
    /// PBKDF2 iterations (mosquitto_passwd's default, 101).
    #[arg(short = 'I', value_name = "ITERATIONS", default_value = "101")]
    iterations: NonZeroU32,
    /// The password file.
    file: PathBuf,
    /// The user name (not with -U).
    user: Option<String>,
    /// The password, with -b.
    password: Option<String>,
}

/// Runs `fulmar passwd`.
pub(crate) fn run(args: &PasswdArgs) -> Result<(), String> {
    let kind = match args.hash.as_str() {
        "sha512-pbkdf2" => HashKind::Pbkdf2Sha512(args.iterations),
        "sha512" => HashKind::Sha512,
        other => return Err(format!("-H {other}: sha512-pbkdf2 or sha512")),
    };
    if args.update {
        if args.user.is_some() {
            return Err("-U takes the file only".to_owned());
        }
        return update(&args.file, kind);
    }
    let Some(user) = args.user.as_deref() else {
        return Err("a user name is needed (or -U to hash a file)".to_owned());
    };
    check_user(user)?;
    match (args.batch, &args.password) {
        (true, None) => return Err("-b needs the password after the user name".to_owned()),
        (false, Some(_)) => {
            return Err("a password on the command line needs -b".to_owned());
        }
        _ => {}
    }
    let text = if args.create {
        String::new()
    } else {
        read(&args.file)?
    };
    let text = if args.delete {
        delete(&text, user).ok_or_else(|| format!("{}: no user {user:?}", args.file.display()))?
    } else {
        let password = match &args.password {
            Some(password) => password.clone(),
            None => ask()?,
        };
        check_password(&password)?;
        set(&text, user, &hash_password(password.as_bytes(), kind)?)
    };
    write(&args.file, &text, args.create)
}

/// A user name that a password file can hold: not empty, no `:` (the
/// separator), no line break, not starting with `#` (a comment).
fn check_user(user: &str) -> Result<(), String> {
    if user.is_empty() {
        return Err("the user name is empty".to_owned());
    }
    if user.contains(':') {
        return Err(format!("user {user:?}: a user name cannot hold ':'"));
    }
    if user.contains(['\n', '\r']) || user.starts_with('#') || user.trim() != user {
        return Err(format!(
            "user {user:?}: a user name cannot hold a line break, start with '#', \
             or start or end with blanks"
        ));
    }
    Ok(())
}

fn check_password(password: &str) -> Result<(), String> {
    if password.is_empty() {
        // Both brokers take an empty password as none.
        return Err(
            "the password is empty: fulmar and mosquitto take an empty password \
                    as none, so that user could not log in with it"
                .to_owned(),
        );
    }
    if password.len() > MAX_PASSWORD {
        return Err(format!(
            "the password is {} bytes long; MQTT carries at most {MAX_PASSWORD}",
            password.len()
        ));
    }
    Ok(())
}

/// Asks for the password twice: on the terminal without echo, or, as
/// mosquitto_passwd does, as two lines of standard input when that is not a
/// terminal (`printf 'pw\npw\n' | fulmar passwd FILE USER`).
fn ask() -> Result<String, String> {
    use std::io::{BufRead, IsTerminal};
    let stdin = std::io::stdin();
    let (password, again) = if stdin.is_terminal() {
        let failed = |e: std::io::Error| {
            format!("cannot read the password from the terminal ({e}); use -b to pass it")
        };
        let password = rpassword::prompt_password("Password: ").map_err(failed)?;
        let again = rpassword::prompt_password("Reenter password: ").map_err(failed)?;
        (password, again)
    } else {
        let mut lines = stdin.lock().lines();
        let mut line = || -> Result<String, String> {
            match lines.next() {
                Some(Ok(line)) => Ok(line.trim_end_matches('\r').to_owned()),
                Some(Err(e)) => Err(format!("cannot read the password: {e}")),
                None => Err("no password on standard input (two lines: the password \
                             and again; or -b to pass it)"
                    .to_owned()),
            }
        };
        (line()?, line()?)
    };
    if password != again {
        return Err("the passwords do not match".to_owned());
    }
    Ok(password)
}

fn read(file: &Path) -> Result<String, String> {
    std::fs::read_to_string(file).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            format!("{}: {e} (-c creates it)", file.display())
        } else {
            format!("{}: {e}", file.display())
        }
    })
}

/// The user a line is about, if it is a user's line (not blank, not a comment).
fn user_of(line: &str) -> Option<&str> {
    if line.trim().is_empty() || line.trim_start().starts_with('#') {
        return None;
    }
    line.split_once(':').map(|(user, _)| user)
}

/// `text` with `user:hash`: in place of the user's first line (later ones
/// dropped: a broker reads the first), or appended. Other lines stay as
/// they are.
fn set(text: &str, user: &str, hash: &str) -> String {
    let mut out = String::with_capacity(text.len() + user.len() + hash.len() + 2);
    let mut done = false;
    for line in text.lines() {
        if user_of(line) == Some(user) {
            if !done {
                out.push_str(&format!("{user}:{hash}\n"));
                done = true;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !done {
        out.push_str(&format!("{user}:{hash}\n"));
    }
    out
}

/// `text` without the lines of `user`; `None` if it had none.
fn delete(text: &str, user: &str) -> Option<String> {
    let mut found = false;
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if user_of(line) == Some(user) {
            found = true;
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    found.then_some(out)
}

/// `fulmar passwd -U`: hashes every `user:password` line whose password is
/// not a hash already.
fn update(file: &Path, kind: HashKind) -> Result<(), String> {
    let text = read(file)?;
    let mut out = String::with_capacity(text.len() * 2);
    let mut hashed = 0;
    for (i, line) in text.lines().enumerate() {
        let Some(user) = user_of(line) else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        // A CRLF file's CR is not part of the password.
        let password = line
            .get(user.len() + 1..)
            .unwrap_or_default()
            .trim_end_matches('\r');
        if is_hash(password) {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        check_user(user).map_err(|e| format!("{} line {}: {e}", file.display(), i + 1))?;
        check_password(password)
            .map_err(|e| format!("{} line {} (user {user:?}): {e}", file.display(), i + 1))?;
        out.push_str(&format!(
            "{user}:{}\n",
            hash_password(password.as_bytes(), kind)?
        ));
        hashed += 1;
    }
    write(file, &out, false)?;
    eprintln!("{}: {hashed} password(s) hashed", file.display());
    Ok(())
}

/// Replaces `file` with `text` through a temporary file in the same
/// directory (a broker reading it on SIGHUP sees the old file or the new
/// one, never half of it). A new file is readable by its owner only; an
/// existing one keeps its permissions.
fn write(file: &Path, text: &str, create: bool) -> Result<(), String> {
    let at = |e: std::io::Error| format!("{}: {e}", file.display());
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = file
        .file_name()
        .ok_or_else(|| format!("{}: not a file name", file.display()))?;
    let mut tmp_name = name.to_os_string();
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let existing = if create {
        None
    } else {
        Some(std::fs::metadata(file).map_err(at)?.permissions())
    };
    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut out = options.open(&tmp)?;
        out.write_all(text.as_bytes())?;
        if let Some(permissions) = existing {
            out.set_permissions(permissions)?;
        }
        out.sync_all()?;
        std::fs::rename(&tmp, file)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(at(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::passwd::PasswordFile;

    // (password files, no spec statement)
    #[test]
    fn set_replaces_or_appends_and_keeps_other_lines() {
        let text = "# users\nalice:old\n\nbob:x\nalice:again\n";
        assert_eq!(set(text, "alice", "new"), "# users\nalice:new\n\nbob:x\n");
        assert_eq!(set(text, "carol", "h"), format!("{text}carol:h\n"));
        assert_eq!(set("", "carol", "h"), "carol:h\n");
        assert_eq!(delete(text, "alice").unwrap(), "# users\n\nbob:x\n");
        assert_eq!(delete(text, "carol"), None);
        // A comment that looks like a user's line is not one.
        assert_eq!(delete("#alice:x\n", "#alice"), None);
    }

    #[test]
    fn hashes_are_read_back_by_the_broker() {
        let iterations = NonZeroU32::new(101).unwrap();
        for kind in [HashKind::Pbkdf2Sha512(iterations), HashKind::Sha512] {
            let hash = hash_password(b"secret", kind).unwrap();
            assert!(is_hash(&hash), "{hash}");
            let file = PasswordFile::parse(&format!("alice:{hash}\n")).unwrap();
            assert!(file.verify("alice", b"secret"));
            assert!(!file.verify("alice", b"Secret"));
            // A fresh salt each time.
            assert_ne!(hash, hash_password(b"secret", kind).unwrap());
        }
        let hash = hash_password(b"pw", HashKind::Pbkdf2Sha512(iterations)).unwrap();
        assert!(hash.starts_with("$7$101$"), "{hash}");
        assert!(!is_hash("plain text"));
    }

    #[test]
    fn bad_user_names_and_passwords_are_refused() {
        for user in ["", "a:b", "#a", " a", "a\nb"] {
            assert!(check_user(user).is_err(), "{user:?}");
        }
        check_user("ünï cøde-user.1").unwrap();
        assert!(check_password("").is_err());
        assert!(check_password(&"x".repeat(MAX_PASSWORD + 1)).is_err());
        check_password(&"x".repeat(MAX_PASSWORD)).unwrap();
    }
}
