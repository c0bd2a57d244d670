//! `millwatch token new`: makes a random access token and the `[[token]]` lines of the auth
//! file that `serve --auth FILE` reads. Only the hash goes into the file; the token itself is
//! printed once, for the client that will send it.

use std::io::Write;

use clap::{Args, Subcommand};

use crate::api::auth::{Role, hash_token, new_secret};

/// Arguments of `token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// What to do with tokens.
    #[command(subcommand)]
    pub command: TokenCommand,
}

/// The subcommands of `token`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new token alone on the first line, then the [[token]] lines to add to the
    /// --auth file. Keep the token secret (give it to the client); the file holds its hash.
    ///
    /// Roles: read (every GET but /healthz), write (POST /ingest, /write, /api/v2/write),
    /// operate (POST /status), admin (alert rules; implies every other role).
    New(NewArgs),
}

/// Arguments of `token new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// Who or what the token is for, as shown in messages: gateway, operators, telegraf.
    #[arg(long, value_parser = parse_name)]
    pub name: String,

    /// A role of the token; repeat for several (--role read --role operate).
    #[arg(long = "role", value_enum, required = true)]
    pub roles: Vec<Role>,
}

/// What can stop `token new`.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The operating system gave no random bytes.
    #[error("cannot get random bytes for the token: {0}")]
    Random(getrandom::Error),
    /// The output could not be written.
    #[error("cannot write the token: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs `token`, writing to `out`.
pub fn run(args: &TokenArgs, mut out: impl Write) -> Result<(), TokenError> {
    match &args.command {
        TokenCommand::New(new) => {
            let secret = new_secret().map_err(TokenError::Random)?;
            let mut roles: Vec<&str> = Vec::new();
            for r in &new.roles {
                if !roles.contains(&r.as_str()) {
                    roles.push(r.as_str());
                }
            }
            let roles: Vec<String> = roles.iter().map(|r| format!("\"{r}\"")).collect();
            write!(
                out,
                "{secret}\n[[token]]\nname = \"{}\"\nhash = \"{}\"\nroles = [{}]\n",
                new.name,
                hash_token(&secret),
                roles.join(", ")
            )?;
            out.flush()?;
            Ok(())
        }
    }
}

/// A token's name: 1–64 of `A–Z a–z 0–9 . _ -`, so that it needs no quoting in TOML or logs.
fn parse_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?}: a name is 1 to 64 of A-Z a-z 0-9 . _ -"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::auth::Tokens;

    #[test]
    fn output_is_a_token_then_its_file_lines() {
        let args = TokenArgs {
            command: TokenCommand::New(NewArgs {
                name: "gateway".into(),
                roles: vec![Role::Write, Role::Read, Role::Write],
            }),
        };
        let mut out = Vec::new();
        run(&args, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let (secret, toml) = text.split_once('\n').unwrap();
        assert!(secret.starts_with("mw_") && secret.len() == 46, "{secret}");
        assert!(!toml.contains(secret));
        let tokens = Tokens::parse(toml).unwrap();
        let t = tokens
            .find(secret)
            .expect("the printed token is in the lines");
        assert_eq!(t.name, "gateway");
        assert!(t.has(Role::Write) && t.has(Role::Read) && !t.has(Role::Operate));
        assert!(toml.contains("roles = [\"write\", \"read\"]"), "{toml}");
    }

    #[test]
    fn names() {
        assert!(parse_name("telegraf-01").is_ok());
        for bad in ["", "a b", "x\"y", &"a".repeat(65)] {
            assert!(parse_name(bad).is_err(), "{bad}");
        }
    }
}
