//! keyboard-interactive authentication answered from `password_file`: the one echo-off prompt
//! PAM asks ("Password:"), and the empty info requests servers send as a last step. Anything
//! else (several prompts, an echoed one, a second prompt after the password) is an `auth`
//! failure that names the prompt, never the password.

use russh::client::{Handle, Handler, KeyboardInteractiveAuthResponse as Reply, Prompt};

use super::error::SessionError;
use crate::secret::Secret;

/// Info requests answered in one attempt before giving up: PAM asks one, then maybe an empty
/// one; a server that keeps asking is not going to accept a password.
const MAX_ROUNDS: usize = 8;

/// How much of a server's prompt an error message quotes.
const PROMPT_CHARS: usize = 60;

/// What to send back for one info request.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Answer {
    /// No prompts: zero responses.
    Nothing,
    /// The password, to the one echo-off prompt.
    Password,
}

/// How a keyboard-interactive attempt ended.
#[derive(Debug)]
pub(super) enum Outcome {
    /// The server accepted the password.
    Accepted,
    /// The server answered with a failure.
    Rejected,
    /// The server asked something `password_file` cannot answer (why, naming the prompt).
    Unanswerable(String),
}

/// The answer to one info request's `prompts`, or why `password_file` cannot answer them.
/// `password_sent`: an earlier request of this attempt got the password already (a second
/// prompt then is a new question, such as "New password:", not one to answer with it).
pub(super) fn answer(prompts: &[Prompt], password_sent: bool) -> Result<Answer, String> {
    match prompts {
        [] => Ok(Answer::Nothing),
        [one] if one.echo => Err(format!(
            "keyboard-interactive asked {} with echo on, which is not a password prompt \
             (password_file answers one echo-off prompt)",
            quote(&one.prompt)
        )),
        [one] if password_sent => Err(format!(
            "keyboard-interactive asked {} after the password was sent \
             (password_file answers one echo-off prompt)",
            quote(&one.prompt)
        )),
        [_] => Ok(Answer::Password),
        several => {
            // The server chooses how many: name the first few.
            let mut named: Vec<String> = several.iter().take(3).map(|p| quote(&p.prompt)).collect();
            if several.len() > 3 {
                named.push(format!("and {} more", several.len() - 3));
            }
            Err(format!(
                "keyboard-interactive asked {} prompts at once ({}); password_file answers one \
                 echo-off prompt",
                several.len(),
                named.join(", ")
            ))
        }
    }
}

/// A prompt as an error message shows it: quoted with control characters escaped (it comes
/// from the server and ends up in logs and status), and cut short.
fn quote(prompt: &str) -> String {
    let mut cut: String = prompt.chars().take(PROMPT_CHARS).collect();
    if cut.len() < prompt.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

/// Runs one keyboard-interactive attempt as `user`, answering from `password`.
pub(super) async fn authenticate<H: Handler>(
    handle: &mut Handle<H>,
    user: &str,
    password: &Secret,
) -> Result<Outcome, SessionError> {
    let mut reply = handle
        .authenticate_keyboard_interactive_start(user, None::<String>)
        .await?;
    let mut password_sent = false;
    for _ in 0..MAX_ROUNDS {
        let prompts = match reply {
            Reply::Success => return Ok(Outcome::Accepted),
            Reply::Failure { .. } => return Ok(Outcome::Rejected),
            Reply::InfoRequest { prompts, .. } => prompts,
        };
        let responses = match answer(&prompts, password_sent) {
            Ok(Answer::Nothing) => Vec::new(),
            Ok(Answer::Password) => {
                password_sent = true;
                vec![password.expose().to_owned()]
            }
            // The session waits for a response that will not come; the caller drops it.
            Err(why) => return Ok(Outcome::Unanswerable(why)),
        };
        reply = handle
            .authenticate_keyboard_interactive_respond(responses)
            .await?;
    }
    Ok(Outcome::Unanswerable(format!(
        "keyboard-interactive sent more than {MAX_ROUNDS} info requests"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(text: &str, echo: bool) -> Prompt {
        Prompt {
            prompt: text.into(),
            echo,
        }
    }

    #[test]
    fn one_echo_off_prompt_gets_the_password() {
        assert_eq!(
            answer(&[prompt("Password: ", false)], false),
            Ok(Answer::Password)
        );
        // Whatever the words: PAM modules phrase it differently.
        assert_eq!(
            answer(&[prompt("(user@host) Password for user: ", false)], false),
            Ok(Answer::Password)
        );
    }

    #[test]
    fn no_prompts_get_no_responses() {
        assert_eq!(answer(&[], false), Ok(Answer::Nothing));
        assert_eq!(answer(&[], true), Ok(Answer::Nothing));
    }

    #[test]
    fn several_prompts_fail_naming_them() {
        let e = answer(
            &[
                prompt("Password: ", false),
                prompt("Verification code: ", false),
            ],
            false,
        )
        .unwrap_err();
        assert!(e.contains("2 prompts"), "{e}");
        assert!(e.contains("\"Password: \""), "{e}");
        assert!(e.contains("\"Verification code: \""), "{e}");
    }

    #[test]
    fn a_flood_of_prompts_names_the_first_three() {
        let many: Vec<Prompt> = (0..10_000)
            .map(|i| prompt(&format!("q{i}: "), false))
            .collect();
        let e = answer(&many, false).unwrap_err();
        assert!(
            e.contains("10000 prompts") && e.contains("and 9997 more"),
            "{e}"
        );
        assert!(e.contains("\"q2: \"") && !e.contains("q3:"), "{e}");
        assert!(e.len() < 400, "{} bytes", e.len());
    }

    #[test]
    fn an_echoed_prompt_fails_naming_it() {
        let e = answer(&[prompt("Username: ", true)], false).unwrap_err();
        assert!(e.contains("\"Username: \"") && e.contains("echo on"), "{e}");
    }

    #[test]
    fn a_second_prompt_after_the_password_fails_naming_it() {
        let e = answer(&[prompt("New password: ", false)], true).unwrap_err();
        assert!(
            e.contains("\"New password: \"") && e.contains("after the password"),
            "{e}"
        );
    }

    #[test]
    fn prompts_are_escaped_and_cut_short() {
        let hostile = format!("\x1b[2J{}\n", "x".repeat(500));
        let e = answer(&[prompt(&hostile, true)], false).unwrap_err();
        assert!(!e.contains('\x1b') && !e.contains('\n'), "{e:?}");
        assert!(e.contains("\\u{1b}[2J"), "{e}");
        assert!(e.len() < 250, "{} chars: {e}", e.len());
    }
}
