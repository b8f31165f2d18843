//! What OpenAI's own API takes beyond the protocol that compatible servers
//! share, for both of its protocols (Chat Completions and Responses):
//! reasoning efforts per model, and the settings only it reads
//! (`prompt_cache_key`, `verbosity`, `service_tier`, `safety_identifier`).
//!
//! Which `reasoning_effort` values a model takes changes with every model
//! (gpt-5 takes `minimal` to `high`; gpt-5.1 `none` to `high`; gpt-5.1-codex
//! `low` to `high`; gpt-5-pro `high` alone; o3 `low` to `high`; gpt-4.1 no
//! effort at all), so no table here tries to know them all. A request
//! carries the effort asked, or for "no reasoning" a first guess from the
//! model's name ([`no_reasoning_effort`]); when the API refuses it, its
//! error names what the model takes ([`read_effort_refusal`]), and the
//! client remembers that (`client::effort`).

use freehold_protocol::{ChatRequest, ReasoningEffort};

/// The most OpenAI's API takes of a `safety_identifier`.
const SAFETY_IDENTIFIER_MAX: usize = 64;

/// The `safety_identifier` a request's end user gets on OpenAI's API
/// ([`ChatRequest::end_user`]; hashed past 64 characters, which the API
/// refuses).
pub fn safety_identifier(request: &ChatRequest) -> Option<String> {
    let id = request.end_user.as_deref()?;
    Some(super::end_user_within(id, SAFETY_IDENTIFIER_MAX))
}

/// OpenAI's effort levels, least first.
pub const EFFORT_LEVELS: [&str; 6] = ["none", "minimal", "low", "medium", "high", "xhigh"];

/// Groq's Qwen models take `none` and `default` alone: `default` is
/// reasoning at the model's own measure, ranked as `medium` when the
/// nearest level to an effort asked is chosen.
pub const DEFAULT_LEVEL: &str = "default";

/// The `reasoning_effort` a request asks an OpenAI-protocol server for:
/// its effort by name, where `openai_api` (the server is OpenAI's own API,
/// or one that takes the same values) also `xhigh` (named by the client, or
/// Anthropic's `max`) and, for no reasoning, [`no_reasoning_effort`].
/// Elsewhere no reasoning sends `none` where `none_for_off` (the server
/// takes it, or says what its model takes instead: OpenRouter, Groq), and
/// no effort at all on other servers, which refuse `none` or read nothing
/// into it.
pub fn effort_name(
    request: &ChatRequest,
    openai_api: bool,
    none_for_off: bool,
) -> Option<&'static str> {
    match request.reasoning? {
        ReasoningEffort::Off if openai_api => no_reasoning_effort(&request.model),
        ReasoningEffort::Off if none_for_off => Some("none"),
        ReasoningEffort::Off => None,
        effort => {
            let above_high = matches!(
                request.reasoning_effort_name.as_deref(),
                Some("xhigh" | "max")
            );
            Some(if openai_api && above_high {
                "xhigh"
            } else {
                effort.as_str()
            })
        }
    }
}

/// The first effort to ask one of OpenAI's models for when a client asks
/// for no reasoning: nothing to a model that does not reason (gpt-4o,
/// gpt-4.1: they refuse the field), `low` to the o-series (their least),
/// `minimal` to gpt-5 and its mini and nano (their least), and `none` to
/// the rest (gpt-5.1 and later, where it is the default). The chat and
/// search models of the gpt-5 family take no effort, and get none. A model
/// that takes other values says so when refused, and is asked for its
/// least.
pub fn no_reasoning_effort(model: &str) -> Option<&'static str> {
    let name = base_name(model);
    let is_o_series = name
        .strip_prefix('o')
        .is_some_and(|rest| rest.chars().next().is_some_and(|c| c.is_ascii_digit()));
    if ["gpt-4", "gpt-3", "chatgpt-"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
        || name.contains("-chat")
        || name.contains("search")
    {
        None
    } else if is_o_series {
        Some("low")
    } else if name == "gpt-5" || name.starts_with("gpt-5-") {
        Some("minimal")
    } else {
        Some("none")
    }
}

/// `model` as OpenAI's model list names it: lowercase, without a
/// provider's `openai/` or a fine-tune's `ft:`.
fn base_name(model: &str) -> String {
    let name = model.rsplit('/').next().unwrap_or(model);
    let name = name.strip_prefix("ft:").unwrap_or(name);
    name.to_ascii_lowercase()
}

/// Whether `model` takes every `verbosity` (OpenAI's gpt-5 family; the
/// models before it, and its codex models, refuse any value but `medium`,
/// and its search models the field).
pub fn takes_verbosity(model: &str) -> bool {
    let name = base_name(model);
    name.starts_with("gpt-5")
        && !["codex", "search", "-chat"]
            .iter()
            .any(|part| name.contains(part))
}

/// The `verbosity` sent for `request`, to a model that takes it.
pub fn verbosity(request: &ChatRequest) -> Option<&'static str> {
    request
        .verbosity
        .filter(|_| takes_verbosity(&request.model))
        .map(|verbosity| verbosity.as_str())
}

/// The `service_tier` sent for `request`: the client's `auto`, `default`
/// or `flex`. `priority` is not sent: OpenAI bills it above the standard
/// prices the gateway's catalog has, so a key's budget would be charged
/// less than it spent.
pub fn service_tier(request: &ChatRequest) -> Option<String> {
    let tier = request.service_tier.as_deref()?;
    if matches!(tier, "auto" | "default" | "flex") {
        Some(tier.to_owned())
    } else {
        tracing::debug!(tier, "a service tier priced above the catalog's: not sent");
        None
    }
}

/// What an OpenAI-protocol server's refusal says about reasoning efforts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EffortRefusal {
    /// The effort sent is not one the model takes; these are (least
    /// first, as [`EFFORT_LEVELS`] orders them).
    Takes(Vec<&'static str>),
    /// The model takes no effort at all.
    TakesNone,
    /// Chat Completions refuses the model's reasoning beside function
    /// tools (gpt-5.4 and later): "use /v1/responses instead, or set
    /// reasoning_effort to 'none'".
    NotBesideTools,
}

/// Reads the refusal of a request that sent `sent` as its effort (`None`:
/// no effort), from the error's message. OpenAI's:
/// - "Unsupported value: 'none' is not supported with the 'gpt-5.1-codex'
///   model. Supported values are: 'low', 'medium', and 'high'.", or
///   "Unsupported value: 'reasoning_effort' does not support 'minimal' with
///   this model. Supported values are: …";
/// - "Unsupported parameter: 'reasoning_effort' is not supported with this
///   model." (`reasoning.effort` in the Responses API), "Unrecognized
///   request argument supplied: reasoning_effort", and, with an effort
///   sent to the Responses API, "Encrypted content is not supported with
///   this model." (the reasoning a model without it cannot return);
/// - "Function tools with reasoning_effort are not supported for gpt-5.4
///   in /v1/chat/completions. …".
///
/// Groq's, with the names in backticks (also read in single quotes, or
/// bare):
/// - "`reasoning_effort` must be one of `none` or `default`" (its Qwen
///   models; `default` is [`DEFAULT_LEVEL`]), or "… one of `low`,
///   `medium`, `high`" (gpt-oss);
/// - "`reasoning_effort` is not supported with this model" (its models
///   that do not reason).
///
/// OpenRouter's, for `none` sent to a model that cannot stop reasoning:
/// "Reasoning is mandatory for this endpoint and cannot be disabled." (it
/// takes every other effort).
///
/// `None` for any other refusal: one naming another parameter, or a value
/// other than the one sent. OpenAI words a refusal of `verbosity`'s value
/// the same way, and its values are effort names too: the caller does not
/// read a refusal of a value it sent as both.
pub fn read_effort_refusal(message: &str, sent: Option<&str>) -> Option<EffortRefusal> {
    let lower = message.to_ascii_lowercase();
    if lower.contains("function tools with reasoning_effort are not supported") {
        return Some(EffortRefusal::NotBesideTools);
    }
    let takes_none = (lower.starts_with("unsupported parameter")
        && ["'reasoning_effort'", "'reasoning.effort'", "'reasoning'"]
            .iter()
            .any(|name| lower.contains(name)))
        || lower.starts_with("unrecognized request argument supplied: reasoning")
        || lower.starts_with("encrypted content is not supported with this model");
    if takes_none {
        return sent.map(|_| EffortRefusal::TakesNone);
    }
    if let Some(refusal) = read_groq_style_refusal(&lower) {
        return sent.and(refusal);
    }
    // OpenRouter, for a model that always reasons: every effort but `none`.
    if lower.starts_with("reasoning is mandatory for this endpoint") {
        return (sent == Some("none")).then(|| EffortRefusal::Takes(EFFORT_LEVELS[1..].to_vec()));
    }
    // "Unsupported value: '<the value refused>' is not supported…", or
    // "Unsupported value: '<the parameter>' does not support '<value>'…"
    let mut quoted = lower
        .strip_prefix("unsupported value:")?
        .split('\'')
        .skip(1)
        .step_by(2);
    let mut refused_value = quoted.next()?;
    if matches!(refused_value, "reasoning_effort" | "reasoning.effort") {
        refused_value = quoted.next()?;
    }
    if Some(refused_value) != sent {
        return None;
    }
    let listed = lower.split_once("supported values are:")?.1;
    // The quoted words are every other piece between single quotes.
    let mut takes: Vec<&'static str> = Vec::new();
    for word in listed.split('\'').skip(1).step_by(2) {
        // A word that is no effort: the message is about another
        // parameter. (Verbosity's values are effort names too: the client
        // does not learn from a refusal when it sent the same word for
        // both.)
        let level = EFFORT_LEVELS.iter().find(|level| **level == word)?;
        takes.push(level);
    }
    takes.sort_by_key(|level| level_index(level));
    takes.dedup();
    (!takes.is_empty()).then_some(EffortRefusal::Takes(takes))
}

/// A refusal in Groq's words (`lower`, lowercased): the parameter named
/// first, then "must be one of" and the values it takes, or "is not
/// supported" with the model. `None` for any other message.
fn read_groq_style_refusal(lower: &str) -> Option<Option<EffortRefusal>> {
    let name = lower
        .trim_start_matches(['`', '\'', '"'])
        .strip_prefix("reasoning_effort")?
        .trim_start_matches(['`', '\'', '"']);
    if name
        .trim_start()
        .starts_with("is not supported with this model")
    {
        return Some(Some(EffortRefusal::TakesNone));
    }
    let listed = name.trim_start().strip_prefix("must be one of")?;
    // The list ends with its sentence ("… or `high`. Got `none`.").
    let listed = listed.split(['.', '\n']).next().unwrap_or_default();
    let mut takes: Vec<&'static str> = Vec::new();
    for word in listed.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if let Some(level) = EFFORT_LEVELS
            .iter()
            .copied()
            .chain([DEFAULT_LEVEL])
            .find(|level| *level == word)
        {
            takes.push(level);
        } else if !matches!(word, "" | "or" | "and") {
            // A word that is no effort: not a list of efforts.
            return Some(None);
        }
    }
    takes.sort_by_key(|level| level_index(level));
    takes.dedup();
    Some((!takes.is_empty()).then_some(EffortRefusal::Takes(takes)))
}

/// The position of an effort in [`EFFORT_LEVELS`]; [`DEFAULT_LEVEL`]
/// stands at `medium`'s.
pub fn level_index(level: &str) -> usize {
    let level = if level == DEFAULT_LEVEL {
        "medium"
    } else {
        level
    };
    EFFORT_LEVELS
        .iter()
        .position(|known| *known == level)
        .unwrap_or(EFFORT_LEVELS.len())
}

/// The level of `takes` nearest to `asked`; between two as near, the
/// higher (an answer should not reason less than asked for, when it can be
/// helped).
pub fn nearest_level(asked: &str, takes: &[&'static str]) -> Option<&'static str> {
    // Reasoning asked for is never turned off while the model takes any.
    let off_only_if_asked = |level: &&'static str| {
        *level != "none" || asked == "none" || takes.iter().all(|taken| *taken == "none")
    };
    let asked = level_index(asked);
    takes
        .iter()
        .copied()
        .filter(off_only_if_asked)
        .min_by_key(|level| {
            let index = level_index(level);
            (index.abs_diff(asked), std::cmp::Reverse(index))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use freehold_protocol::{Message, Verbosity};

    fn asking(model: &str, effort: ReasoningEffort, name: Option<&str>) -> ChatRequest {
        let mut request = ChatRequest::new(model, vec![Message::user("hi")]);
        request.reasoning = Some(effort);
        request.reasoning_effort_name = name.map(str::to_owned);
        request
    }

    #[test]
    fn no_reasoning_asks_each_family_for_its_least() {
        let cases = [
            ("gpt-5.1", Some("none")),
            ("gpt-5.2-codex", Some("none")),
            ("gpt-5", Some("minimal")),
            ("gpt-5-mini", Some("minimal")),
            ("gpt-5-nano-2025-08-07", Some("minimal")),
            ("o3", Some("low")),
            ("o4-mini", Some("low")),
            ("openai/o1", Some("low")),
            ("gpt-4.1", None),
            ("gpt-4o-mini", None),
            ("chatgpt-4o-latest", None),
            ("gpt-5-chat-latest", None),
            ("gpt-5.1-chat-latest", None),
            ("gpt-5-search-api", None),
            ("ft:gpt-4.1-mini-2025-04-14:acme::B1x2", None),
            ("ft:o4-mini-2025-04-16:acme::C3", Some("low")),
        ];
        for (model, expected) in cases {
            assert_eq!(no_reasoning_effort(model), expected, "{model}");
            let off = asking(model, ReasoningEffort::Off, None);
            assert_eq!(effort_name(&off, true, false), expected, "{model}");
            // Other servers get `none` where they take it, else nothing.
            assert_eq!(effort_name(&off, false, true), Some("none"));
            assert_eq!(effort_name(&off, false, false), None);
        }
    }

    #[test]
    fn efforts_above_high_reach_openai_by_name() {
        for name in ["xhigh", "max"] {
            let request = asking("gpt-5.2", ReasoningEffort::High, Some(name));
            assert_eq!(effort_name(&request, true, false), Some("xhigh"));
            assert_eq!(effort_name(&request, false, true), Some("high"));
        }
        let request = asking("gpt-5.2", ReasoningEffort::Minimal, None);
        assert_eq!(effort_name(&request, true, false), Some("minimal"));
        let mut unasked = asking("gpt-5.2", ReasoningEffort::Low, None);
        unasked.reasoning = None;
        assert_eq!(effort_name(&unasked, true, false), None);
        assert_eq!(effort_name(&unasked, false, true), None);
    }

    #[test]
    fn reads_what_each_refusal_says() {
        let codex = "Unsupported value: 'none' is not supported with the 'gpt-5.1-codex' model. \
                     Supported values are: 'low', 'medium', and 'high'.";
        assert_eq!(
            read_effort_refusal(codex, Some("none")),
            Some(EffortRefusal::Takes(vec!["low", "medium", "high"]))
        );
        // The value refused must be the effort sent.
        assert_eq!(read_effort_refusal(codex, Some("low")), None);
        assert_eq!(read_effort_refusal(codex, None), None);
        let pro = "Unsupported value: 'medium' is not supported with the 'gpt-5-pro' model. \
                   Supported values are: 'high'.";
        assert_eq!(
            read_effort_refusal(pro, Some("medium")),
            Some(EffortRefusal::Takes(vec!["high"]))
        );
        for message in [
            "Unsupported parameter: 'reasoning_effort' is not supported with this model.",
            "Unsupported parameter: 'reasoning.effort' is not supported with this model.",
        ] {
            assert_eq!(
                read_effort_refusal(message, Some("none")),
                Some(EffortRefusal::TakesNone)
            );
            assert_eq!(read_effort_refusal(message, None), None);
        }
        let worded_by_parameter = "Unsupported value: 'reasoning_effort' does not support \
                                   'minimal' with this model. Supported values are: 'none', \
                                   'low', 'medium', 'high', 'xhigh'.";
        assert_eq!(
            read_effort_refusal(worded_by_parameter, Some("minimal")),
            Some(EffortRefusal::Takes(vec![
                "none", "low", "medium", "high", "xhigh"
            ]))
        );
        assert_eq!(read_effort_refusal(worded_by_parameter, Some("low")), None);
        for message in [
            "Unrecognized request argument supplied: reasoning_effort",
            "Encrypted content is not supported with this model.",
        ] {
            assert_eq!(
                read_effort_refusal(message, Some("minimal")),
                Some(EffortRefusal::TakesNone)
            );
            assert_eq!(read_effort_refusal(message, None), None);
        }
        let tools = "Function tools with reasoning_effort are not supported for gpt-5.4 in \
                     /v1/chat/completions. Please use /v1/responses instead.";
        assert_eq!(
            read_effort_refusal(tools, None),
            Some(EffortRefusal::NotBesideTools)
        );
        // Other refusals say nothing about efforts.
        for message in [
            "Unsupported value: 'temperature' does not support 0.5 with this model. Only the \
             default (1) value is supported.",
            "Unsupported parameter: 'max_tokens' is not supported with this model.",
            "Invalid value for 'tool_choice'",
        ] {
            assert_eq!(read_effort_refusal(message, Some("low")), None, "{message}");
        }
    }

    /// Groq words its refusals with the names in backticks; DashScope's in
    /// single quotes.
    #[test]
    fn reads_groq_style_refusals() {
        let qwen = "`reasoning_effort` must be one of `none` or `default`";
        assert_eq!(
            read_effort_refusal(qwen, Some("high")),
            Some(EffortRefusal::Takes(vec!["none", "default"]))
        );
        assert_eq!(read_effort_refusal(qwen, None), None);
        let gpt_oss = "`reasoning_effort` must be one of `low`, `medium`, or `high`. Got `none`.";
        assert_eq!(
            read_effort_refusal(gpt_oss, Some("none")),
            Some(EffortRefusal::Takes(vec!["low", "medium", "high"]))
        );
        let quoted = "'reasoning_effort' must be one of: 'none', 'minimal', 'low', 'medium', \
                      'high', 'xhigh'";
        assert_eq!(
            read_effort_refusal(quoted, Some("max")),
            Some(EffortRefusal::Takes(EFFORT_LEVELS.to_vec()))
        );
        for llama in [
            "`reasoning_effort` is not supported with this model",
            "reasoning_effort is not supported with this model",
        ] {
            assert_eq!(
                read_effort_refusal(llama, Some("low")),
                Some(EffortRefusal::TakesNone)
            );
        }
        // Other parameters, and lists of other things, are not efforts.
        for message in [
            "`temperature` must be one of `0` or `1`",
            "`reasoning_effort` must be one of `fast` or `slow`",
            "`reasoning_format` must be one of `hidden`, `raw` or `parsed`",
            "`service_tier` is not supported with this model",
        ] {
            assert_eq!(read_effort_refusal(message, Some("low")), None, "{message}");
        }
        // Not a refusal of the model, but of its use.
        assert_eq!(
            read_effort_refusal(
                "`reasoning_effort` is not supported with `tool_choice` required",
                Some("low")
            ),
            None
        );
        // `default` counts as `medium` when the nearest is chosen, and
        // reasoning asked for is never turned off.
        let takes = ["none", DEFAULT_LEVEL];
        assert_eq!(nearest_level("high", &takes), Some("default"));
        assert_eq!(nearest_level("low", &takes), Some("default"));
        assert_eq!(nearest_level("minimal", &takes), Some("default"));
        assert_eq!(nearest_level("none", &takes), Some("none"));
        assert_eq!(nearest_level("low", &["none"]), Some("none"));
        // OpenRouter's model that must reason takes anything but `none`.
        let mandatory = "Reasoning is mandatory for this endpoint and cannot be disabled.";
        assert_eq!(
            read_effort_refusal(mandatory, Some("none")),
            Some(EffortRefusal::Takes(vec![
                "minimal", "low", "medium", "high", "xhigh"
            ]))
        );
        assert_eq!(read_effort_refusal(mandatory, Some("low")), None);
    }

    #[test]
    fn the_nearest_level_leans_up() {
        let gpt_5_1 = ["none", "low", "medium", "high"];
        assert_eq!(nearest_level("minimal", &gpt_5_1), Some("low"));
        assert_eq!(nearest_level("xhigh", &gpt_5_1), Some("high"));
        assert_eq!(
            nearest_level("none", &["low", "medium", "high"]),
            Some("low")
        );
        assert_eq!(nearest_level("none", &["minimal", "low"]), Some("minimal"));
        assert_eq!(nearest_level("low", &["high"]), Some("high"));
        assert_eq!(nearest_level("low", &[]), None);
    }

    #[test]
    fn settings_only_openai_reads_are_kept_to_what_it_takes() {
        let mut request = ChatRequest::new("gpt-5.1", vec![Message::user("hi")]);
        request.verbosity = Some(Verbosity::Low);
        assert_eq!(verbosity(&request), Some("low"));
        for model in [
            "gpt-4.1",
            "gpt-5.1-codex",
            "gpt-5-search-api",
            "gpt-5-chat-latest",
        ] {
            request.model = model.into();
            assert_eq!(verbosity(&request), None, "{model}");
        }
        request.model = "gpt-5.1".into();
        for (tier, sent) in [
            ("flex", Some("flex")),
            ("auto", Some("auto")),
            ("default", Some("default")),
            ("priority", None),
            ("scale", None),
        ] {
            request.service_tier = Some(tier.into());
            assert_eq!(service_tier(&request).as_deref(), sent, "{tier}");
        }
    }
}
