//! Printing results and errors, as text or as JSON.

use serde_json::Value;

/// An error for the user: a snake_case code and a message.
#[derive(Debug)]
pub struct CliError {
    pub code: String,
    pub message: String,
}

impl CliError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> CliError {
        CliError {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// The one place the client's errors become the CLI's: the same code and message.
impl From<stampline_client::ClientError> for CliError {
    fn from(e: stampline_client::ClientError) -> Self {
        CliError::new(e.code(), e.to_string())
    }
}

impl From<stampline_client::LinkError> for CliError {
    fn from(e: stampline_client::LinkError) -> Self {
        stampline_client::ClientError::from(e).into()
    }
}

impl From<stampline_client::HttpError> for CliError {
    fn from(e: stampline_client::HttpError) -> Self {
        stampline_client::ClientError::from(e).into()
    }
}

impl From<stampline_client::TrustError> for CliError {
    fn from(e: stampline_client::TrustError) -> Self {
        stampline_client::ClientError::from(e).into()
    }
}

impl From<stampline_client::print::PrintError> for CliError {
    fn from(e: stampline_client::print::PrintError) -> Self {
        stampline_client::ClientError::from(e).into()
    }
}

/// How to print.
#[derive(Clone, Copy, Debug)]
pub struct Out {
    pub json: bool,
}

impl Out {
    /// Print a result: the JSON object, or the human text.
    pub fn done(&self, value: &Value, human: &str) {
        if self.json {
            println!("{value}");
        } else {
            println!("{human}");
        }
    }

    /// Print a typed reply: the JSON object it serialises to, or the human text.
    pub fn reply<T: serde::Serialize>(&self, reply: &T, human: &str) {
        self.done(&serde_json::to_value(reply).unwrap_or(Value::Null), human);
    }

    /// Print an error and exit with status 1.
    pub fn fail(&self, e: &CliError) -> ! {
        if self.json {
            println!(
                "{}",
                serde_json::json!({"error": e.code, "message": e.message})
            );
        } else {
            eprintln!("stampline: {} ({})", e.message, e.code);
        }
        std::process::exit(1)
    }
}
