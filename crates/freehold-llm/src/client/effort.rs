//! What the OpenAI-protocol clients learn about each model's reasoning
//! efforts from the server's refusals (see [`crate::wire::openai_api`]), so
//! that a model is refused once, not on every request.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};

use freehold_protocol::{ErrorKind, LlmError};

use crate::wire::openai_api::{EffortRefusal, nearest_level, read_effort_refusal};

/// How many models a memory keeps; past that, the others are still sent
/// what they take, but only after each refusal.
const MODELS_KEPT: usize = 64;

/// The efforts each model was found to take, shared by a client's clones
/// (and by a Chat Completions client with the Responses client it sends
/// some requests through).
#[derive(Debug, Default)]
pub(crate) struct EffortMemory {
    /// Whether any model was learned: until then, no request locks.
    any: AtomicBool,
    learned: Mutex<Learned>,
}

#[derive(Debug, Default)]
struct Learned {
    models: BTreeMap<String, ModelEfforts>,
    /// Whether it was logged that [`MODELS_KEPT`] were reached.
    full_logged: bool,
}

/// What one model was found to take.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct ModelEfforts {
    /// The efforts it takes, least first (empty: none at all); `None` until
    /// it refused one.
    takes: Option<Vec<&'static str>>,
    /// Whether Chat Completions refuses its reasoning beside function
    /// tools (then only `none` goes there).
    not_beside_tools: bool,
}

impl ModelEfforts {
    /// What to send instead of `asked` to `endpoint`.
    fn effort_for(&self, asked: Option<&'static str>, endpoint: Endpoint) -> Option<&'static str> {
        if endpoint.has_function_tools_in_chat() && self.not_beside_tools {
            return Some("none");
        }
        match (&self.takes, asked) {
            (Some(takes), Some(asked)) => nearest_level(asked, takes),
            (_, asked) => asked,
        }
    }

    /// Adds what `refusal` says.
    fn learn(&mut self, refusal: &EffortRefusal) {
        match refusal {
            EffortRefusal::Takes(takes) => self.takes = Some(takes.clone()),
            EffortRefusal::TakesNone => self.takes = Some(Vec::new()),
            EffortRefusal::NotBesideTools => self.not_beside_tools = true,
        }
    }
}

/// The OpenAI endpoint a request goes to: Chat Completions refuses some
/// models' reasoning beside function tools, the Responses API takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `POST /chat/completions`.
    ChatCompletions {
        /// Whether the request carries function tools.
        with_tools: bool,
    },
    /// `POST /responses`.
    Responses,
}

impl Endpoint {
    /// Whether the request carries function tools to Chat Completions.
    fn has_function_tools_in_chat(self) -> bool {
        self == Endpoint::ChatCompletions { with_tools: true }
    }
}

/// What one request asks of an [`EffortMemory`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct EffortAsk<'a> {
    /// The provider's name, for the log.
    pub(crate) provider: &'a str,
    /// The model the request is for.
    pub(crate) model: &'a str,
    /// The effort the request names
    /// ([`crate::wire::openai_api::effort_name`]).
    pub(crate) asked: Option<&'static str>,
    /// The verbosity it sends, if any: OpenAI refuses a verbosity's value
    /// in the same words as an effort's.
    pub(crate) verbosity: Option<&'a str>,
    /// Where it goes.
    pub(crate) endpoint: Endpoint,
}

impl EffortMemory {
    /// The effort to send for `ask`.
    pub(crate) fn effort_for(&self, ask: &EffortAsk<'_>) -> Option<&'static str> {
        // Most servers never refuse: their requests take no lock.
        if !self.any.load(Ordering::Acquire) {
            return ask.asked;
        }
        let learned = self.learned.lock().unwrap_or_else(PoisonError::into_inner);
        match learned.models.get(ask.model) {
            Some(efforts) => efforts.effort_for(ask.asked, ask.endpoint),
            None => ask.asked,
        }
    }

    /// Whether Chat Completions was found to refuse `model`'s reasoning
    /// beside function tools.
    pub(crate) fn refuses_beside_tools(&self, model: &str) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        self.learned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .models
            .get(model)
            .is_some_and(|efforts| efforts.not_beside_tools)
    }

    /// Reads `refused`, the server's answer to `ask` sent with the effort
    /// `sent`: when it says what the model takes, remembers that and
    /// returns it with the effort to send instead (`None`: none at all).
    /// `None` when the refusal is about something else, or leaves nothing
    /// else to try.
    pub(crate) fn learn(
        &self,
        ask: &EffortAsk<'_>,
        sent: Option<&str>,
        refused: &LlmError,
    ) -> Option<Lesson> {
        if refused.kind != ErrorKind::InvalidRequest || refused.status != Some(400) {
            return None;
        }
        let refusal = read_effort_refusal(&refused.message, sent)?;
        // A refusal of a value sent both as the effort and as the verbosity
        // (`low`…) may be about either: OpenAI words both alike.
        if matches!(refusal, EffortRefusal::Takes(_))
            && ask.verbosity.is_some()
            && ask.verbosity == sent
        {
            return None;
        }
        let (provider, model) = (ask.provider, ask.model);
        let mut learned = self.learned.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = learned.models.len() < MODELS_KEPT || learned.models.contains_key(model);
        let mut efforts = learned.models.get(model).cloned().unwrap_or_default();
        efforts.learn(&refusal);
        let next = efforts.effort_for(ask.asked, ask.endpoint);
        if next == sent {
            return None;
        }
        if kept {
            learned.models.insert(model.to_owned(), efforts);
            drop(learned);
            self.any.store(true, Ordering::Release);
            if refusal == EffortRefusal::NotBesideTools {
                tracing::info!(
                    provider,
                    model,
                    "Chat Completions refused the model's reasoning beside function tools: its \
                     requests with tools go through the Responses API from now on (OpenAI's \
                     own API), or elsewhere with no reasoning"
                );
            } else {
                tracing::info!(
                    provider,
                    model,
                    refused = sent.unwrap_or("(none)"),
                    sending = next.unwrap_or("(none)"),
                    "the model refused the reasoning effort sent; sending what it takes from \
                     now on"
                );
            }
        } else if !std::mem::replace(&mut learned.full_logged, true) {
            drop(learned);
            tracing::warn!(
                provider,
                model,
                "{MODELS_KEPT} models' reasoning efforts are remembered already: this one's, \
                 and any other's past them, will be refused once per request before what \
                 they take is sent (logged once)"
            );
        }
        Some(Lesson { refusal, next })
    }
}

/// What [`EffortMemory::learn`] read in a refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lesson {
    /// What the refusal said.
    pub(crate) refusal: EffortRefusal,
    /// The effort to send instead (`None`: none at all).
    pub(crate) next: Option<&'static str>,
}

/// How many times a request is sent again with another reasoning effort
/// after the server names the ones its model takes.
const EFFORT_RETRIES: usize = 2;

/// One request's tries at an effort its model takes, shared by both OpenAI
/// clients: send [`Self::effort`]; after a refusal, [`Self::retry_after`]
/// says whether to send again, with the effort it learned.
#[derive(Debug)]
pub(crate) struct EffortTries<'a> {
    memory: &'a EffortMemory,
    ask: EffortAsk<'a>,
    effort: Option<&'static str>,
    retries: usize,
}

impl<'a> EffortTries<'a> {
    /// The first try of `ask`: what `memory` learned of the model, or what
    /// was asked.
    pub(crate) fn new(memory: &'a EffortMemory, ask: EffortAsk<'a>) -> Self {
        Self {
            effort: memory.effort_for(&ask),
            memory,
            ask,
            retries: 0,
        }
    }

    /// The effort to send now.
    pub(crate) fn effort(&self) -> Option<&'static str> {
        self.effort
    }

    /// Whether the effort to send differs from what the request named (and
    /// the encoder put in the body).
    pub(crate) fn differs_from_asked(&self) -> bool {
        self.effort != self.ask.asked
    }

    /// Learns from `refused`, the answer to [`Self::effort`]: true when the
    /// request should be sent again with the new [`Self::effort`]; false
    /// when the refusal is the answer (about something else, nothing left
    /// to try, or the tries spent).
    pub(crate) fn retry_after(&mut self, refused: &LlmError) -> bool {
        if self.retries >= EFFORT_RETRIES {
            return false;
        }
        self.retries += 1;
        match self.memory.learn(&self.ask, self.effort, refused) {
            Some(lesson) => {
                self.effort = lesson.next;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request with no function tools to Chat Completions.
    const PLAIN: Endpoint = Endpoint::ChatCompletions { with_tools: false };
    /// A request with function tools to Chat Completions.
    const TOOLS: Endpoint = Endpoint::ChatCompletions { with_tools: true };

    fn ask<'a>(model: &'a str, asked: Option<&'static str>, endpoint: Endpoint) -> EffortAsk<'a> {
        EffortAsk {
            provider: "openai",
            model,
            asked,
            verbosity: None,
            endpoint,
        }
    }

    fn refusal(message: &str) -> LlmError {
        LlmError::new(ErrorKind::InvalidRequest, "openai", message).with_status(400)
    }

    const CODEX: &str = "Unsupported value: 'none' is not supported with the 'gpt-5.1-codex' \
                         model. Supported values are: 'low', 'medium', and 'high'.";

    #[test]
    fn a_refused_effort_is_replaced_by_the_nearest_the_model_takes() {
        let memory = EffortMemory::default();
        assert_eq!(
            memory.effort_for(&ask("gpt-5.1-codex", Some("none"), PLAIN)),
            Some("none")
        );
        let next = memory.learn(
            &ask("gpt-5.1-codex", Some("none"), PLAIN),
            Some("none"),
            &refusal(CODEX),
        );
        assert_eq!(next.map(|lesson| lesson.next), Some(Some("low")));
        assert_eq!(
            memory.effort_for(&ask("gpt-5.1-codex", Some("none"), PLAIN)),
            Some("low")
        );
        assert_eq!(
            memory.effort_for(&ask("gpt-5.1-codex", Some("xhigh"), TOOLS)),
            Some("high")
        );
        assert_eq!(memory.effort_for(&ask("gpt-5.1-codex", None, PLAIN)), None);
        // Other models are untouched.
        assert_eq!(
            memory.effort_for(&ask("gpt-5.1", Some("none"), PLAIN)),
            Some("none")
        );
        // The same refusal of what is already sent leaves nothing to try.
        let again = refusal(
            "Unsupported value: 'low' is not supported with the 'gpt-5.1-codex' model. \
             Supported values are: 'low'.",
        );
        assert_eq!(
            memory.learn(
                &ask("gpt-5.1-codex", Some("none"), PLAIN),
                Some("low"),
                &again
            ),
            None
        );
    }

    #[test]
    fn a_model_that_takes_no_effort_gets_none_and_the_tools_rule_applies_to_chat_only() {
        let memory = EffortMemory::default();
        let no_effort =
            refusal("Unsupported parameter: 'reasoning_effort' is not supported with this model.");
        assert_eq!(
            memory
                .learn(
                    &ask("gpt-4.1", Some("none"), PLAIN),
                    Some("none"),
                    &no_effort
                )
                .map(|lesson| lesson.next),
            Some(None)
        );
        assert_eq!(
            memory.effort_for(&ask("gpt-4.1", Some("high"), PLAIN)),
            None
        );

        let tools = refusal(
            "Function tools with reasoning_effort are not supported for gpt-5.4 in \
             /v1/chat/completions. Please use /v1/responses instead.",
        );
        assert_eq!(
            memory
                .learn(&ask("gpt-5.4", None, TOOLS), None, &tools)
                .map(|lesson| lesson.next),
            Some(Some("none"))
        );
        assert!(memory.refuses_beside_tools("gpt-5.4"));
        assert!(!memory.refuses_beside_tools("gpt-4.1"));
        assert_eq!(
            memory.effort_for(&ask("gpt-5.4", Some("high"), TOOLS)),
            Some("none")
        );
        assert_eq!(
            memory.effort_for(&ask("gpt-5.4", Some("high"), PLAIN)),
            Some("high")
        );
        // The Responses API takes reasoning beside tools.
        assert_eq!(
            memory.effort_for(&ask("gpt-5.4", Some("high"), Endpoint::Responses)),
            Some("high")
        );
    }

    #[test]
    fn tries_send_what_was_learned_and_stop_when_nothing_is_left_to_try() {
        let memory = EffortMemory::default();
        let mut tries = EffortTries::new(&memory, ask("gpt-5.1-codex", Some("none"), PLAIN));
        assert_eq!(tries.effort(), Some("none"));
        assert!(!tries.differs_from_asked());
        assert!(tries.retry_after(&refusal(CODEX)));
        assert_eq!(tries.effort(), Some("low"));
        assert!(tries.differs_from_asked());
        // The model refuses `low` as well, taking nothing at all.
        let none_at_all =
            refusal("Unsupported parameter: 'reasoning_effort' is not supported with this model.");
        assert!(tries.retry_after(&none_at_all));
        assert_eq!(tries.effort(), None);
        // Two retries spent: the refusal is the answer.
        assert!(!tries.retry_after(&refusal(CODEX)));

        // A later request starts from what was learned, and another
        // refusal is the answer.
        let mut later = EffortTries::new(&memory, ask("gpt-5.1-codex", Some("high"), PLAIN));
        assert_eq!(later.effort(), None);
        assert!(!later.retry_after(&refusal("Invalid value for 'tool_choice'")));
    }

    /// OpenAI refuses a verbosity's value in the same words as an effort's:
    /// a value sent as both teaches nothing.
    #[test]
    fn a_refused_value_sent_as_both_effort_and_verbosity_teaches_nothing() {
        let memory = EffortMemory::default();
        let verbosity = refusal(
            "Unsupported value: 'low' is not supported with the 'gpt-5.1-codex-max' model. \
             Supported values are: 'medium'.",
        );
        assert_eq!(
            memory.learn(
                &EffortAsk {
                    provider: "openai",
                    verbosity: Some("low"),
                    ..ask("gpt-5.1-codex-max", Some("low"), PLAIN)
                },
                Some("low"),
                &verbosity
            ),
            None
        );
        assert_eq!(
            memory.effort_for(&ask("gpt-5.1-codex-max", Some("high"), PLAIN)),
            Some("high")
        );
    }

    #[test]
    fn other_refusals_teach_nothing() {
        let memory = EffortMemory::default();
        for error in [
            refusal("Invalid value for 'tool_choice'"),
            LlmError::new(ErrorKind::Server, "openai", CODEX).with_status(500),
            LlmError::new(ErrorKind::InvalidRequest, "openai", CODEX).with_status(422),
        ] {
            assert_eq!(
                memory.learn(&ask("m", Some("none"), PLAIN), Some("none"), &error),
                None
            );
        }
        assert!(!memory.any.load(Ordering::Acquire));
    }

    #[test]
    fn the_memory_is_bounded() {
        let memory = EffortMemory::default();
        for n in 0..MODELS_KEPT + 3 {
            let model = format!("m{n}");
            let next = memory.learn(
                &EffortAsk {
                    provider: "p",
                    verbosity: None,
                    ..ask(&model, Some("none"), PLAIN)
                },
                Some("none"),
                &refusal(CODEX),
            );
            // Past the bound the retry still gets what the model takes.
            assert_eq!(next.map(|lesson| lesson.next), Some(Some("low")), "{model}");
        }
        let learned = memory
            .learned
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        assert_eq!(learned.models.len(), MODELS_KEPT);
        assert!(learned.full_logged);
    }
}
