//! Operations answered later, without a thread waiting for them.
//!
//! SQLite's writer runs every write on its own thread and answers after the group's commit. A
//! blocking caller waits on a channel ([`crate::Store::issue`]); an async caller gets a
//! [`Queued`] and awaits it ([`crate::Store::issue_queued`]), so that no thread is parked per
//! request (measured: the server spent a fifth of its CPU switching between the threads that
//! waited). Both receive the same messages: the checks the operation deferred
//! ([`crate::SignedItem::check`]), which the caller runs while the writer goes on, then the
//! outcome.

use std::any::Any;
use std::sync::mpsc::SyncSender;

use crate::{ItemCheck, LedgerError};

/// What an operation gives back to its caller: its result, or the panic it raised.
pub(crate) type Outcome<T> = Result<Result<T, LedgerError>, Box<dyn Any + Send>>;

/// What the writer tells a caller.
pub(crate) enum ToCaller<T> {
    /// Run these checks and send the verdict (before the operation's group can commit).
    Check(Vec<ItemCheck>, SyncSender<Result<(), String>>),
    /// The operation's result, after its group's commit.
    Done(Outcome<T>),
}

/// Where the writer sends an operation's messages: a thread blocked on a channel, or a task.
pub(crate) enum Reply<T> {
    Thread(SyncSender<ToCaller<T>>),
    Task(tokio::sync::mpsc::UnboundedSender<ToCaller<T>>),
}

impl<T> Reply<T> {
    /// Sends without waiting (a thread's channel has room for both messages); a caller that is
    /// gone is no one's loss.
    pub(crate) fn send(&self, message: ToCaller<T>) {
        let _ = match self {
            Reply::Thread(to) => to.send(message).map_err(|_| ()),
            Reply::Task(to) => to.send(message).map_err(|_| ()),
        };
    }
}

/// The caller's side of the exchange, the same for threads and tasks.
#[derive(Default)]
pub(crate) struct Caller {
    /// This caller's own failed check: the reason it gives, whatever its group's fate.
    failed_check: Option<String>,
}

impl Caller {
    /// Handles one message; `Some` with the operation's result once it is done.
    pub(crate) fn take<T>(&mut self, message: ToCaller<T>) -> Option<Result<T, LedgerError>> {
        match message {
            ToCaller::Check(checks, tell) => {
                let verdict = checks.into_iter().try_for_each(|check| check());
                self.failed_check = verdict.as_ref().err().cloned();
                let _ = tell.send(verdict);
                None
            }
            ToCaller::Done(outcome) => Some(match self.failed_check.take() {
                Some(reason) => Err(LedgerError::Signing(reason)),
                None => match outcome {
                    Ok(result) => result,
                    Err(panic) => std::panic::resume_unwind(panic),
                },
            }),
        }
    }
}

/// The error of a caller whose writer went away without answering.
pub(crate) fn writer_stopped() -> LedgerError {
    LedgerError::GroupCommit("the ledger writer stopped before answering".into())
}

/// A ledger operation handed to the store: await [`Queued::outcome`]. It holds the outcome
/// already when the store ran the operation on the calling thread (PostgreSQL; see
/// [`crate::Store::queues_writes`]).
pub struct Queued<T> {
    inner: Inner<T>,
}

enum Inner<T> {
    Ready(Result<T, LedgerError>),
    Waiting(tokio::sync::mpsc::UnboundedReceiver<ToCaller<T>>),
}

impl<T> Queued<T> {
    pub(crate) fn ready(result: Result<T, LedgerError>) -> Queued<T> {
        Queued {
            inner: Inner::Ready(result),
        }
    }

    pub(crate) fn waiting(answers: tokio::sync::mpsc::UnboundedReceiver<ToCaller<T>>) -> Queued<T> {
        Queued {
            inner: Inner::Waiting(answers),
        }
    }

    /// The operation's result, once it is committed (or failed). Runs the checks the operation
    /// deferred on this task meanwhile (a fresh signature's check: tens of microseconds).
    pub async fn outcome(self) -> Result<T, LedgerError> {
        match self.inner {
            Inner::Ready(result) => result,
            Inner::Waiting(mut answers) => {
                let mut caller = Caller::default();
                while let Some(message) = answers.recv().await {
                    if let Some(result) = caller.take(message) {
                        return result;
                    }
                }
                Err(writer_stopped())
            }
        }
    }
}

impl<T> std::fmt::Debug for Queued<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.inner {
            Inner::Ready(_) => "Queued(ready)",
            Inner::Waiting(_) => "Queued(waiting)",
        })
    }
}
