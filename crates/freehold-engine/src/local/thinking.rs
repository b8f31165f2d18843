//! Where a thinking model's thinking ends and its answer begins, followed
//! token by token while it decodes: a tool call counts only in the answer.
//!
//! A model that thinks in `<think>` tags may draft a call there
//! (`<tool_call>` and all) before it decides. Read as a call, the draft
//! would end the answer, and the tool-call grammar, fed the thinking, would
//! take it for its trigger and force the rest of the thinking into a call.
//! So the engine's text scanner looks for calls only once the thinking is
//! closed, and the grammar is fed only the answer's tokens: its trigger
//! patterns (a call opening the answer, say) then apply to the answer as
//! they do for a model that does not think. llama.cpp's server does the
//! same by anchoring its patterns after `</think>`; a gate on the tokens
//! costs nothing per token, where a pattern over the whole thinking is
//! matched again at every token.
//!
//! The tags are read as [`freehold_llm::think`] reads them when it moves
//! the thinking to reasoning: at the very start of the answer (after
//! blanks), or from the first token when the prompt opened them.

use freehold_llm::stop::held_prefix;
use llama_cpp_2::token::LlamaToken;

use super::template::ThinkingTags;

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

/// Where the text written so far has got to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Place {
    /// Only blanks, or the start of `<think>`, so far: the model may be
    /// opening its thinking.
    Undecided,
    /// Inside the thinking.
    Thinking,
    /// In the answer: after the thinking, or without any.
    Answer,
}

impl Place {
    /// Where an answer starts, for a prompt that leaves `tags` to the model.
    pub(super) fn at_start(tags: ThinkingTags) -> Self {
        match tags {
            ThinkingTags::None => Place::Answer,
            ThinkingTags::MayOpen => Place::Undecided,
            ThinkingTags::Opened => Place::Thinking,
        }
    }
}

/// Follows the thinking through the text as it comes.
#[derive(Debug)]
pub(super) struct ThinkingScan {
    place: Place,
    /// Whether the last [`Self::take_thinking`] passed `</think>`.
    closed: bool,
}

impl ThinkingScan {
    pub(super) fn new(tags: ThinkingTags) -> Self {
        Self {
            place: Place::at_start(tags),
            closed: false,
        }
    }

    /// Where the text taken so far has got to.
    pub(super) fn place(&self) -> Place {
        self.place
    }

    /// Whether the last [`Self::take_thinking`] closed the thinking.
    pub(super) fn closed(&self) -> bool {
        self.closed
    }

    /// Takes the thinking (its tags included) from the start of `pending`
    /// and returns it. What is left in `pending` is the answer's once
    /// [`Self::place`] is [`Place::Answer`]; before that, it is text held
    /// until it says more: blanks or the start of `<think>` at the start,
    /// or what may be the start of `</think>`.
    pub(super) fn take_thinking(&mut self, pending: &mut String) -> String {
        self.closed = false;
        let mut thought = String::new();
        loop {
            match self.place {
                Place::Answer => return thought,
                Place::Undecided => {
                    let text = pending.trim_start();
                    if text.starts_with(OPEN) {
                        self.place = Place::Thinking;
                    } else if text.is_empty() || OPEN.starts_with(text) {
                        return thought;
                    } else {
                        self.place = Place::Answer;
                    }
                }
                Place::Thinking => match pending.find(CLOSE) {
                    Some(at) => {
                        thought.extend(pending.drain(..at + CLOSE.len()));
                        self.place = Place::Answer;
                        self.closed = true;
                    }
                    None => {
                        let cut = pending.len() - held_prefix(pending, CLOSE);
                        thought.extend(pending.drain(..cut));
                        return thought;
                    }
                },
            }
        }
    }
}

/// Which sampled tokens the tool-call grammar is fed: those of the answer
/// only (see the module's documentation).
#[derive(Debug)]
pub(super) struct GrammarGate {
    place: Place,
    /// The tokens written while it was undecided whether the model opens
    /// its thinking: the answer's, if it does not.
    held: Vec<LlamaToken>,
}

impl GrammarGate {
    pub(super) fn new(tags: ThinkingTags) -> Self {
        Self {
            place: Place::at_start(tags),
            held: Vec::new(),
        }
    }

    /// Whether the grammar constrains the next token.
    pub(super) fn open(&self) -> bool {
        self.place == Place::Answer
    }

    /// The tokens to feed the grammar now that `token` was written and the
    /// text got to `place` (`closed`: by closing the thinking).
    pub(super) fn after(
        &mut self,
        token: LlamaToken,
        place: Place,
        closed: bool,
    ) -> Vec<LlamaToken> {
        let before = std::mem::replace(&mut self.place, place);
        if closed {
            // The token that closed the thinking is the thinking's; the
            // answer starts after it.
            self.held.clear();
            return Vec::new();
        }
        match (before, place) {
            (Place::Answer, _) => vec![token],
            (Place::Undecided, Place::Undecided) => {
                self.held.push(token);
                Vec::new()
            }
            // No thinking after all: what was held is the answer's start.
            (Place::Undecided, Place::Answer) => {
                let mut tokens = std::mem::take(&mut self.held);
                tokens.push(token);
                tokens
            }
            (_, Place::Thinking) | (Place::Thinking, _) => {
                self.held.clear();
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pieces of `text`, as tokens might cut it, through a scan: the
    /// thinking taken at each step, and where the text got to.
    fn scan(tags: ThinkingTags, pieces: &[&str]) -> (Vec<String>, Place, String) {
        let mut scan = ThinkingScan::new(tags);
        let mut pending = String::new();
        let mut taken = Vec::new();
        for piece in pieces {
            pending.push_str(piece);
            taken.push(scan.take_thinking(&mut pending));
        }
        (taken, scan.place(), pending)
    }

    #[test]
    fn the_thinking_is_taken_up_to_its_close_even_cut_across_pieces() {
        let (taken, place, rest) = scan(
            ThinkingTags::Opened,
            &[
                "I could call <tool_call>",
                " now. </th",
                "ink>\n<tool_call>{",
            ],
        );
        assert_eq!(
            taken,
            ["I could call <tool_call>", " now. ", "</think>"],
            "the start of `</think>` is held until it is whole"
        );
        assert_eq!(place, Place::Answer);
        assert_eq!(rest, "\n<tool_call>{");
    }

    #[test]
    fn a_model_that_may_open_its_thinking_is_followed_from_the_start() {
        let (taken, place, rest) = scan(
            ThinkingTags::MayOpen,
            &["\n", "<th", "ink>Hm</think>", "Hi"],
        );
        assert_eq!(taken, ["", "", "\n<think>Hm</think>", ""]);
        assert_eq!(place, Place::Answer);
        assert_eq!(rest, "Hi");
        // An answer that does not open with the tag has no thinking, and a
        // tag later in it is text.
        let (taken, place, rest) = scan(ThinkingTags::MayOpen, &["<t", "ool_call> <think>"]);
        assert_eq!(taken, ["", ""]);
        assert_eq!(place, Place::Answer);
        assert_eq!(rest, "<tool_call> <think>");
        // A template without the tags: all answer from the first piece.
        let (taken, place, rest) = scan(ThinkingTags::None, &["<think>"]);
        assert_eq!(
            (taken, place, rest.as_str()),
            (vec![String::new()], Place::Answer, "<think>")
        );
    }

    #[test]
    fn the_grammar_is_fed_only_the_answers_tokens() {
        let token = LlamaToken::new;
        // Opened by the prompt: nothing until after the closing token.
        let mut gate = GrammarGate::new(ThinkingTags::Opened);
        assert!(!gate.open());
        assert_eq!(gate.after(token(1), Place::Thinking, false), []);
        assert_eq!(gate.after(token(2), Place::Answer, true), []);
        assert!(gate.open());
        assert_eq!(gate.after(token(3), Place::Answer, false), [token(3)]);
        // Undecided, then no thinking: the held tokens were the answer's.
        let mut gate = GrammarGate::new(ThinkingTags::MayOpen);
        assert_eq!(gate.after(token(1), Place::Undecided, false), []);
        assert!(!gate.open());
        assert_eq!(
            gate.after(token(2), Place::Answer, false),
            [token(1), token(2)]
        );
        // Undecided, then thinking: they were the thinking's.
        let mut gate = GrammarGate::new(ThinkingTags::MayOpen);
        assert_eq!(gate.after(token(1), Place::Undecided, false), []);
        assert_eq!(gate.after(token(2), Place::Thinking, false), []);
        assert_eq!(gate.after(token(3), Place::Answer, true), []);
        assert_eq!(gate.after(token(4), Place::Answer, false), [token(4)]);
        // No tags: every token.
        let mut gate = GrammarGate::new(ThinkingTags::None);
        assert!(gate.open());
        assert_eq!(gate.after(token(5), Place::Answer, false), [token(5)]);
    }
}
