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
//! they do for a model that does not think. llama.cpp's server keeps its
//! lazy grammar out of the thinking too (its sampler applies the grammar
//! only once the reasoning has ended).
//!
//! The tags are read as [`freehold_llm::think`] reads them when it moves
//! the thinking to reasoning: at the very start of the answer (after
//! blanks), or from the first token when the prompt opened them.

use freehold_llm::stop::held_prefix;
use freehold_llm::think::{CLOSE, OPEN};
use llama_cpp_2::token::LlamaToken;

use super::template::ThinkingTags;

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

/// What one piece of text did: where the text got to with it, and, when it
/// closed the thinking, the answer's text that followed `</think>` in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Step {
    pub(super) place: Place,
    pub(super) closed_before: Option<String>,
}

impl Step {
    /// A piece that left the text at `place` and closed nothing.
    pub(super) fn at(place: Place) -> Self {
        Self {
            place,
            closed_before: None,
        }
    }
}

/// Follows the thinking through the text as it comes.
#[derive(Debug)]
pub(super) struct ThinkingScan {
    place: Place,
}

impl ThinkingScan {
    /// A scan of an answer to a prompt that leaves `tags` to the model.
    pub(super) fn new(tags: ThinkingTags) -> Self {
        Self {
            place: Place::at_start(tags),
        }
    }

    /// Takes the thinking (its tags included) from the start of `pending`,
    /// the text not yet sent on with the newest piece at its end, and
    /// returns it with what the piece did. What is left in `pending` is the
    /// answer's once the place is [`Place::Answer`]; before that, it is text
    /// held until it says more: blanks or the start of `<think>` at the
    /// start, or what may be the start of `</think>`.
    pub(super) fn take_thinking(&mut self, pending: &mut String) -> (String, Step) {
        let mut thought = String::new();
        let mut closed_before = None;
        loop {
            match self.place {
                Place::Answer => break,
                Place::Undecided => {
                    let text = pending.trim_start();
                    if text.starts_with(OPEN) {
                        self.place = Place::Thinking;
                    } else if text.is_empty() || OPEN.starts_with(text) {
                        break;
                    } else {
                        self.place = Place::Answer;
                    }
                }
                Place::Thinking => match pending.find(CLOSE) {
                    Some(at) => {
                        thought.extend(pending.drain(..at + CLOSE.len()));
                        self.place = Place::Answer;
                        // Only a possible start of `</think>` was held
                        // before this piece: what is left is its own.
                        closed_before = Some(pending.clone());
                    }
                    None => {
                        let cut = pending.len() - held_prefix(pending, CLOSE);
                        thought.extend(pending.drain(..cut));
                        break;
                    }
                },
            }
        }
        let step = Step {
            place: self.place,
            closed_before,
        };
        (thought, step)
    }
}

/// What the grammar is fed after a token.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Feed {
    Nothing,
    Tokens(Vec<LlamaToken>),
    /// The answer's start, written in the token that closed the thinking:
    /// to be fed as the model's vocabulary spells it.
    Text(String),
}

/// Which sampled tokens the tool-call grammar is fed: those of the answer
/// only (see the module's documentation).
#[derive(Debug)]
pub(super) struct GrammarGate {
    place: Place,
    /// The tokens written while it was undecided whether the model opens
    /// its thinking: the answer's, if it does not. Their text is blanks and
    /// the start of `<think>`, which no trigger of the grammar matches
    /// before the token that decides, so feeding them late changes nothing
    /// but what the trigger sees.
    held: Vec<LlamaToken>,
}

impl GrammarGate {
    /// A gate for an answer to a prompt that leaves `tags` to the model.
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

    /// What to feed the grammar now that `token` was written and its text
    /// did `step`.
    pub(super) fn after(&mut self, token: LlamaToken, step: &Step) -> Feed {
        let before = std::mem::replace(&mut self.place, step.place);
        if let Some(answer) = &step.closed_before {
            // The token that closed the thinking is the thinking's; the
            // answer's text after `</think>` in it is the grammar's (its
            // triggers may be anchored at the answer's start). Blanks need
            // not be: the triggers allow them.
            self.held.clear();
            return if answer.trim().is_empty() {
                Feed::Nothing
            } else {
                Feed::Text(answer.clone())
            };
        }
        match (before, step.place) {
            (Place::Answer, _) => Feed::Tokens(vec![token]),
            (Place::Undecided, Place::Undecided) => {
                self.held.push(token);
                Feed::Nothing
            }
            // No thinking after all: what was held is the answer's start.
            (Place::Undecided, Place::Answer) => {
                let mut tokens = std::mem::take(&mut self.held);
                tokens.push(token);
                Feed::Tokens(tokens)
            }
            (Place::Undecided | Place::Thinking, Place::Thinking) => {
                self.held.clear();
                Feed::Nothing
            }
            // The thinking ends only by closing, handled above.
            (Place::Thinking, Place::Answer | Place::Undecided) => Feed::Nothing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pieces` through a scan: the thinking taken at each, where the text
    /// got to, and what is left for the answer.
    fn scan(tags: ThinkingTags, pieces: &[&str]) -> (Vec<String>, Place, String) {
        let mut scan = ThinkingScan::new(tags);
        let mut pending = String::new();
        let mut taken = Vec::new();
        let mut place = Place::at_start(tags);
        for piece in pieces {
            pending.push_str(piece);
            let (thought, step) = scan.take_thinking(&mut pending);
            taken.push(thought);
            place = step.place;
        }
        (taken, place, pending)
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

    /// The scan and the gate together, piece by piece as tokens cut the
    /// text: the tokens (numbered from 1) the grammar is fed, and the text.
    fn fed(tags: ThinkingTags, pieces: &[&str]) -> Vec<Feed> {
        let mut scan = ThinkingScan::new(tags);
        let mut gate = GrammarGate::new(tags);
        let mut pending = String::new();
        let mut feeds = Vec::new();
        for (number, piece) in (1..).zip(pieces) {
            pending.push_str(piece);
            let (_, step) = scan.take_thinking(&mut pending);
            // What the answer's scanner would send on.
            if step.place == Place::Answer {
                pending.clear();
            }
            feeds.push(gate.after(LlamaToken::new(number), &step));
        }
        feeds
    }

    #[test]
    fn the_grammar_is_fed_only_the_answers_tokens() {
        use Feed::{Nothing, Text, Tokens};
        let token = LlamaToken::new;
        // Opened by the prompt: nothing of the thinking, the closing token
        // included, then every token.
        assert_eq!(
            fed(
                ThinkingTags::Opened,
                &["<tool_call>", "</", "think>", "\n", "{"]
            ),
            [
                Nothing,
                Nothing,
                Nothing,
                Tokens(vec![token(4)]),
                Tokens(vec![token(5)])
            ]
        );
        // The closing token's text after `</think>` is the answer's start.
        assert_eq!(
            fed(ThinkingTags::Opened, &["Hm</think>\n{", "\"name\""]),
            [Text("\n{".into()), Tokens(vec![token(2)])]
        );
        // Undecided, then no thinking: the held tokens were the answer's.
        assert_eq!(
            fed(ThinkingTags::MayOpen, &[" ", "<t", "ool_call>"]),
            [Nothing, Nothing, Tokens(vec![token(1), token(2), token(3)])]
        );
        // Undecided, then thinking: they were the thinking's; one piece
        // that opens and closes it feeds only what follows.
        assert_eq!(
            fed(
                ThinkingTags::MayOpen,
                &["<th", "ink>", "<tool_call></think>", "x"]
            ),
            [Nothing, Nothing, Nothing, Tokens(vec![token(4)])]
        );
        assert_eq!(
            fed(ThinkingTags::MayOpen, &["\n", "<think></think>{"]),
            [Nothing, Text("{".into())]
        );
        // No tags: every token.
        assert_eq!(
            fed(ThinkingTags::None, &["<think>"]),
            [Tokens(vec![token(1)])]
        );
    }
}
