//! Operations answered later, without a thread waiting for them: the one way the ledger hands a
//! write over and answers it.
//!
//! SQLite's writer runs every write on its own thread and answers after the group's commit. A
//! blocking caller of an ordinary [`crate::Store`] method waits on a channel; a [`Queued`]
//! operation ([`crate::Store::issue`], [`crate::Store::confirm`]) is answered through the handle it
//! returns, which an async caller awaits ([`Queued::outcome`]) so that no thread is parked per
//! request (measured: the server spent a fifth of its CPU switching between the threads that
//! waited), and a blocking caller waits on ([`Queued::wait`]). Both receive the same messages:
//! the checks the operation deferred ([`crate::SignedItem::check`]), which the caller runs while
//! the writer goes on, then the outcome. A store that has no writer thread (PostgreSQL) runs the
//! operation on a blocking thread of the caller's runtime, or at once outside one.

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

/// A ledger operation handed to the store: await [`Queued::outcome`] (async code) or call
/// [`Queued::wait`] (a thread that may block). Either way the answer comes after the operation's
/// commit, and the checks it deferred run on the caller's thread meanwhile.
#[must_use = "the operation's answer (and the checks it deferred) come through the Queued"]
pub struct Queued<T> {
    inner: Inner<T>,
}

enum Inner<T> {
    /// The operation ran already, on the calling thread.
    Ready(Result<T, LedgerError>),
    /// SQLite's writer answers.
    Writer(tokio::sync::mpsc::UnboundedReceiver<ToCaller<T>>),
    /// A blocking thread of the caller's runtime runs it (PostgreSQL's blocking client).
    Worker(tokio::sync::oneshot::Receiver<Outcome<T>>),
}

impl<T: Send + 'static> Queued<T> {
    pub(crate) fn ready(result: Result<T, LedgerError>) -> Queued<T> {
        Queued {
            inner: Inner::Ready(result),
        }
    }

    pub(crate) fn writer(answers: tokio::sync::mpsc::UnboundedReceiver<ToCaller<T>>) -> Queued<T> {
        Queued {
            inner: Inner::Writer(answers),
        }
    }

    /// Runs `op`, which blocks, where it may: on a blocking thread of the runtime the caller is
    /// in (so that an async caller's thread is not blocked), at once outside a runtime.
    pub(crate) fn blocking(
        op: impl FnOnce() -> Result<T, LedgerError> + Send + 'static,
    ) -> Queued<T> {
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let (answer, answered) = tokio::sync::oneshot::channel();
                runtime.spawn_blocking(move || {
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(op));
                    let _ = answer.send(outcome);
                });
                Queued {
                    inner: Inner::Worker(answered),
                }
            }
            Err(_) => Queued::ready(op()),
        }
    }

    /// The operation's result, once it is committed (or failed). Runs the checks the operation
    /// deferred on this task meanwhile (a fresh signature's check: tens of microseconds).
    pub async fn outcome(self) -> Result<T, LedgerError> {
        match self.inner {
            Inner::Ready(result) => result,
            Inner::Writer(mut answers) => {
                let mut caller = Caller::default();
                while let Some(message) = answers.recv().await {
                    if let Some(result) = caller.take(message) {
                        return result;
                    }
                }
                Err(writer_stopped())
            }
            Inner::Worker(answered) => unwind(answered.await),
        }
    }

    /// [`Queued::outcome`] for a thread that may block. Must not be called from async code (it
    /// panics there, as blocking a runtime's thread would stall it): await `outcome` instead.
    pub fn wait(self) -> Result<T, LedgerError> {
        match self.inner {
            Inner::Ready(result) => result,
            Inner::Writer(mut answers) => {
                let mut caller = Caller::default();
                while let Some(message) = answers.blocking_recv() {
                    if let Some(result) = caller.take(message) {
                        return result;
                    }
                }
                Err(writer_stopped())
            }
            Inner::Worker(answered) => unwind(answered.blocking_recv()),
        }
    }
}

/// A worker's outcome: its result, or its panic raised again here.
fn unwind<T, E>(answered: Result<Outcome<T>, E>) -> Result<T, LedgerError> {
    match answered {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => Err(LedgerError::GroupCommit(
            "the ledger's worker stopped before answering".into(),
        )),
    }
}

impl<T> std::fmt::Debug for Queued<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.inner {
            Inner::Ready(_) => "Queued(ready)",
            Inner::Writer(_) => "Queued(writer)",
            Inner::Worker(_) => "Queued(worker)",
        })
    }
}
