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
    /// What to send instead of `asked`.
    fn effort_for(&self, asked: Option<&'static str>, tools_in_chat: bool) -> Option<&'static str> {
        if tools_in_chat && self.not_beside_tools {
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

impl EffortMemory {
    /// The effort to send `model` for `asked` (the effort the request names,
    /// [`crate::wire::openai_api::effort_name`]); `tools_in_chat`: the
    /// request carries function tools to Chat Completions (the Responses
    /// API takes reasoning beside them).
    pub(crate) fn effort_for(
        &self,
        model: &str,
        asked: Option<&'static str>,
        tools_in_chat: bool,
    ) -> Option<&'static str> {
        // Most servers never refuse: their requests take no lock.
        if !self.any.load(Ordering::Acquire) {
            return asked;
        }
        let learned = self.learned.lock().unwrap_or_else(PoisonError::into_inner);
        match learned.models.get(model) {
            Some(efforts) => efforts.effort_for(asked, tools_in_chat),
            None => asked,
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

    /// Reads `refused`, the server's answer to a request for `model` that
    /// asked for `asked` and sent the effort `sent` and the verbosity
    /// `verbosity` (`tools_in_chat` as for [`Self::effort_for`]): when it
    /// says what the model takes, remembers that and returns it with the
    /// effort to send instead (`None`: none at all). `None` when the refusal
    /// is about something else, or leaves nothing else to try.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn learn(
        &self,
        provider: &str,
        model: &str,
        asked: Option<&'static str>,
        sent: Option<&str>,
        verbosity: Option<&str>,
        tools_in_chat: bool,
        refused: &LlmError,
    ) -> Option<Lesson> {
        if refused.kind != ErrorKind::InvalidRequest || refused.status != Some(400) {
            return None;
        }
        let refusal = read_effort_refusal(&refused.message, sent)?;
        // A refusal of a value sent both as the effort and as the verbosity
        // (`low`…) may be about either: OpenAI words both alike.
        if matches!(refusal, EffortRefusal::Takes(_)) && verbosity.is_some() && verbosity == sent {
            return None;
        }
        let mut learned = self.learned.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = learned.models.len() < MODELS_KEPT || learned.models.contains_key(model);
        let mut efforts = learned.models.get(model).cloned().unwrap_or_default();
        efforts.learn(&refusal);
        let next = efforts.effort_for(asked, tools_in_chat);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(message: &str) -> LlmError {
        LlmError::new(ErrorKind::InvalidRequest, "openai", message).with_status(400)
    }

    const CODEX: &str = "Unsupported value: 'none' is not supported with the 'gpt-5.1-codex' \
                         model. Supported values are: 'low', 'medium', and 'high'.";

    #[test]
    fn a_refused_effort_is_replaced_by_the_nearest_the_model_takes() {
        let memory = EffortMemory::default();
        assert_eq!(
            memory.effort_for("gpt-5.1-codex", Some("none"), false),
            Some("none")
        );
        let next = memory.learn(
            "openai",
            "gpt-5.1-codex",
            Some("none"),
            Some("none"),
            None,
            false,
            &refusal(CODEX),
        );
        assert_eq!(next.map(|lesson| lesson.next), Some(Some("low")));
        assert_eq!(
            memory.effort_for("gpt-5.1-codex", Some("none"), false),
            Some("low")
        );
        assert_eq!(
            memory.effort_for("gpt-5.1-codex", Some("xhigh"), true),
            Some("high")
        );
        assert_eq!(memory.effort_for("gpt-5.1-codex", None, false), None);
        // Other models are untouched.
        assert_eq!(
            memory.effort_for("gpt-5.1", Some("none"), false),
            Some("none")
        );
        // The same refusal of what is already sent leaves nothing to try.
        let again = refusal(
            "Unsupported value: 'low' is not supported with the 'gpt-5.1-codex' model. \
             Supported values are: 'low'.",
        );
        assert_eq!(
            memory.learn(
                "openai",
                "gpt-5.1-codex",
                Some("none"),
                Some("low"),
                None,
                false,
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
                    "openai",
                    "gpt-4.1",
                    Some("none"),
                    Some("none"),
                    None,
                    false,
                    &no_effort
                )
                .map(|lesson| lesson.next),
            Some(None)
        );
        assert_eq!(memory.effort_for("gpt-4.1", Some("high"), false), None);

        let tools = refusal(
            "Function tools with reasoning_effort are not supported for gpt-5.4 in \
             /v1/chat/completions. Please use /v1/responses instead.",
        );
        assert_eq!(
            memory
                .learn("openai", "gpt-5.4", None, None, None, true, &tools)
                .map(|lesson| lesson.next),
            Some(Some("none"))
        );
        assert!(memory.refuses_beside_tools("gpt-5.4"));
        assert!(!memory.refuses_beside_tools("gpt-4.1"));
        assert_eq!(
            memory.effort_for("gpt-5.4", Some("high"), true),
            Some("none")
        );
        assert_eq!(
            memory.effort_for("gpt-5.4", Some("high"), false),
            Some("high")
        );
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
                "openai",
                "gpt-5.1-codex-max",
                Some("low"),
                Some("low"),
                Some("low"),
                false,
                &verbosity
            ),
            None
        );
        assert_eq!(
            memory.effort_for("gpt-5.1-codex-max", Some("high"), false),
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
                memory.learn(
                    "openai",
                    "m",
                    Some("none"),
                    Some("none"),
                    None,
                    false,
                    &error
                ),
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
                "p",
                &model,
                Some("none"),
                Some("none"),
                None,
                false,
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
