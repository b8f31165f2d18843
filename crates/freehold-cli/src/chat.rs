//! `freehold chat`: one prompt, one streamed answer.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use freehold_engine::default_model::Purpose;
use freehold_llm::cost::CostDisplay;
use freehold_protocol::{ChatRequest, Message, ReasoningEffort, ResponseBuilder, StreamEvent};
use futures::StreamExt;

use crate::local_model;
use crate::setup::Setup;

/// Arguments of `freehold chat`.
#[derive(Debug, Args)]
pub(crate) struct ChatArgs {
    /// The prompt. Read from standard input when omitted; when both are
    /// given, standard input is appended to the prompt.
    prompt: Vec<String>,

    /// The model, as `provider:model` (`ollama:qwen3:8b`,
    /// `openai:gpt-5-mini`, `local:smollm2-135m`), an alias from the
    /// configuration, a `.gguf` file, or `local` for the embedded engine's
    /// default. Default: `default_model` from the configuration, else
    /// `local` (the best installed model, pulling the recommended one when
    /// none is).
    #[arg(short, long, env = "FREEHOLD_MODEL")]
    model: Option<String>,

    /// A system prompt.
    #[arg(long)]
    system: Option<String>,

    /// The most tokens the answer may have.
    #[arg(long)]
    max_tokens: Option<u32>,

    /// Sampling temperature.
    #[arg(long)]
    temperature: Option<f32>,

    /// Reasoning effort for models that think: none, minimal, low, medium,
    /// high (none turns thinking off where the model allows it).
    #[arg(long, value_parser = parse_effort)]
    reasoning: Option<ReasoningEffort>,

    /// Do not print the usage and cost line.
    #[arg(short, long)]
    quiet: bool,
}

fn parse_effort(text: &str) -> Result<ReasoningEffort, String> {
    match text {
        "none" => Ok(ReasoningEffort::Off),
        "minimal" => Ok(ReasoningEffort::Minimal),
        "low" => Ok(ReasoningEffort::Low),
        "medium" => Ok(ReasoningEffort::Medium),
        "high" => Ok(ReasoningEffort::High),
        other => Err(format!(
            "`{other}` is not one of none, minimal, low, medium, high"
        )),
    }
}

pub(crate) async fn run(args: ChatArgs, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    let prompt = read_prompt(&args.prompt, "freehold chat \"…\"")?;
    let setup = Setup::load(config)?;
    let named = args
        .model
        .as_deref()
        .or(setup.config.default_model.as_deref());
    let model = local_model::model_name(named, Purpose::Chat).await?;
    let mut messages = Vec::new();
    if let Some(system) = &args.system {
        messages.push(Message::system(system.clone()));
    }
    messages.push(Message::user(prompt));
    let mut request = ChatRequest::new(model.clone(), messages);
    request.max_tokens = args.max_tokens;
    request.sampling.temperature = args.temperature;
    request.reasoning = args.reasoning;

    let router = setup.router;
    let style = Style::detect();
    let (target, mut stream) = tokio::select! {
        routed = router.stream_routed(request) => routed.with_context(|| format!("cannot ask {model}"))?,
        _ = tokio::signal::ctrl_c() => return Ok(cancelled()),
    };
    let mut out = Renderer::new(style);
    let mut builder = ResponseBuilder::default();
    loop {
        let event = tokio::select! {
            event = stream.next() => event,
            _ = tokio::signal::ctrl_c() => {
                drop(stream);
                out.finish();
                return Ok(cancelled());
            }
        };
        let Some(event) = event else { break };
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                out.finish();
                return Err(anyhow::Error::new(error).context(format!("{model} failed mid-answer")));
            }
        };
        out.event(&event)?;
        builder.push(&event);
    }
    out.finish();
    let response = builder.finish();
    if !args.quiet {
        let cost = router.cost_of(&target.provider, &target.model, &response.usage);
        let usage = response.usage;
        let cached = if usage.cached_input_tokens > 0 {
            format!(" ({} cached)", usage.cached_input_tokens)
        } else {
            String::new()
        };
        let speed = response.timings.map(describe_timings).unwrap_or_default();
        eprintln!(
            "{}[{} · {} in{} · {} out · {} · stop: {}{}]{}",
            style.dim_on(),
            target,
            usage.input_tokens,
            cached,
            usage.output_tokens,
            CostDisplay(cost),
            response.stop_reason,
            speed,
            style.dim_off(),
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// ` · prefill 250 tok/s · decode 110 tok/s · first token 0.12 s`, for
/// providers that measure it.
fn describe_timings(timings: freehold_protocol::Timings) -> String {
    let mut out = String::new();
    if let Some(rate) = timings.prompt_tokens_per_second() {
        out.push_str(&format!(" · prefill {rate:.0} tok/s"));
    }
    if let Some(rate) = timings.generation_tokens_per_second() {
        out.push_str(&format!(" · decode {rate:.0} tok/s"));
    }
    out.push_str(&format!(
        " · first token {:.2} s",
        timings.time_to_first_token().as_secs_f64()
    ));
    out
}

fn cancelled() -> ExitCode {
    eprintln!("\n[cancelled]");
    ExitCode::from(130)
}

/// The prompt from the arguments, standard input, or both.
pub(crate) fn read_prompt(words: &[String], usage: &str) -> anyhow::Result<String> {
    let mut prompt = words.join(" ");
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut piped = String::new();
        stdin
            .lock()
            .read_to_string(&mut piped)
            .context("cannot read the prompt from standard input")?;
        if !piped.trim().is_empty() {
            if !prompt.is_empty() {
                prompt.push_str("\n\n");
            }
            prompt.push_str(piped.trim_end());
        }
    }
    if prompt.trim().is_empty() {
        bail!("no prompt: pass one as an argument ({usage}) or pipe it on standard input");
    }
    Ok(prompt)
}

/// Whether to use ANSI styling.
#[derive(Debug, Clone, Copy)]
struct Style {
    color: bool,
}

impl Style {
    fn detect() -> Self {
        let color = std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
        Self { color }
    }

    fn dim_on(self) -> &'static str {
        if self.color { "\x1b[2m" } else { "" }
    }

    fn dim_off(self) -> &'static str {
        if self.color { "\x1b[0m" } else { "" }
    }
}

/// Writes events to the terminal: answer text as is, reasoning dimmed (only
/// on a terminal: piped output carries the answer alone), tool calls as a
/// dimmed note.
struct Renderer {
    style: Style,
    in_reasoning: bool,
    wrote_any: bool,
    ends_with_newline: bool,
}

impl Renderer {
    fn new(style: Style) -> Self {
        Self {
            style,
            in_reasoning: false,
            wrote_any: false,
            ends_with_newline: true,
        }
    }

    fn write(&mut self, text: &str) -> anyhow::Result<()> {
        let mut stdout = std::io::stdout().lock();
        stdout.write_all(text.as_bytes())?;
        stdout.flush()?;
        if !text.is_empty() {
            self.wrote_any = true;
            self.ends_with_newline = text.ends_with('\n');
        }
        Ok(())
    }

    fn event(&mut self, event: &StreamEvent) -> anyhow::Result<()> {
        match event {
            StreamEvent::ReasoningDelta { text, .. } if self.style.color => {
                if !self.in_reasoning {
                    self.in_reasoning = true;
                    self.write(self.style.dim_on())?;
                }
                self.write(text)?;
            }
            StreamEvent::TextDelta { text } => {
                self.end_reasoning()?;
                self.write(text)?;
            }
            StreamEvent::ToolCallStart { name, .. } => {
                self.end_reasoning()?;
                let note = format!(
                    "{}[tool call: {name}]{}\n",
                    self.style.dim_on(),
                    self.style.dim_off()
                );
                self.write(&note)?;
            }
            _ => {}
        }
        Ok(())
    }

    fn end_reasoning(&mut self) -> anyhow::Result<()> {
        if self.in_reasoning {
            self.in_reasoning = false;
            let close = format!("{}\n\n", self.style.dim_off());
            self.write(&close)?;
        }
        Ok(())
    }

    fn finish(&mut self) {
        let _ = self.end_reasoning();
        if self.wrote_any && !self.ends_with_newline {
            let _ = self.write("\n");
        }
    }
}
