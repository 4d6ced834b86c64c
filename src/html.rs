//! HTML rendered to text the way SpamAssassin renders it (its `HTML.pm`), so that body rules
//! written against SpamAssassin see the same text in Kala.
//!
//! SpamAssassin does not lay the page out: it walks the tag stream (HTML::Parser, a tokenizer,
//! not a tree builder), squeezes each text run's whitespace to single spaces, and lets a few
//! tags stand for whitespace: `<br>` and `<div>` a line break, `<p>` and other blocks a blank
//! line, table cells and list items a space. Text inside `<script>` and `<style>` is not text.
//! html5ever's tokenizer gives the same stream, entities decoded.

use std::cell::RefCell;

use html5ever::tendril::StrTendril;
use html5ever::tokenizer::states::RawKind;
use html5ever::tokenizer::{
    BufferQueue, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts,
};

/// The rendered text of `html`.
pub fn render(html: &str) -> String {
    // As SpamAssassin does before parsing: `&nbsp;` is a space.
    let html = html.replace("&nbsp;", " ");
    let sink = Renderer::default();
    let input = BufferQueue::default();
    input.push_back(StrTendril::from_slice(&html));
    let tokenizer = Tokenizer::new(sink, TokenizerOpts::default());
    let _ = tokenizer.feed(&input);
    tokenizer.end();
    tokenizer.sink.flush_text();
    let pieces = tokenizer.sink.pieces.take();
    pieces.into_iter().map(|p| p.text).collect()
}

/// One piece of output: a text run, or the whitespace a tag stands for.
struct Piece {
    text: String,
    whitespace: bool,
}

#[derive(Default)]
struct Renderer {
    pieces: RefCell<Vec<Piece>>,
    /// Inside `<script>` or `<style>`: text there is not shown.
    hidden: RefCell<u32>,
    /// Text read since the last tag: the tokenizer hands one run over in several tokens.
    text: RefCell<String>,
}

impl Renderer {
    fn flush_text(&self) {
        let text = self.text.take();
        if !text.is_empty() {
            self.push(&text, false);
        }
    }

    /// SpamAssassin's `display_text`: a tag's whitespace eats the space a text run ended
    /// with; a text run after a tag's whitespace loses its leading space.
    fn push(&self, text: &str, whitespace: bool) {
        let mut pieces = self.pieces.borrow_mut();
        let last_is_whitespace = pieces.last().map(|p| p.whitespace);
        let text = if whitespace {
            if last_is_whitespace == Some(false)
                && let Some(last) = pieces.last_mut()
                && last.text.ends_with(' ')
            {
                last.text.pop();
            }
            text.to_string()
        } else {
            let squeezed = squeeze(text);
            match (last_is_whitespace, squeezed.strip_prefix(' ')) {
                (Some(true), Some(rest)) => rest.to_string(),
                _ => squeezed,
            }
        };
        pieces.push(Piece { text, whitespace });
    }
}

/// Runs of HTML whitespace (and no-break spaces) become one space.
fn squeeze(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut in_space = false;
    for c in text.chars() {
        if matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c' | '\x0b' | '\u{a0}') {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            out.push(c);
            in_space = false;
        }
    }
    out
}

/// The whitespace a tag stands for, at its start and at its end.
fn tag_whitespace(name: &str) -> Option<&'static str> {
    match name {
        "br" | "div" => Some("\n"),
        "li" | "th" | "td" | "dt" | "dd" | "embed" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
            Some(" ")
        }
        "p" | "hr" | "blockquote" | "pre" | "listing" | "plaintext" | "xmp" | "title" => {
            Some("\n\n")
        }
        _ => None,
    }
}

impl TokenSink for Renderer {
    type Handle = ();

    fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
        match token {
            Token::TagToken(tag) => {
                self.flush_text();
                let name: &str = &tag.name;
                let hiding = matches!(name, "script" | "style");
                if hiding {
                    let mut hidden = self.hidden.borrow_mut();
                    match tag.kind {
                        TagKind::StartTag if !tag.self_closing => *hidden += 1,
                        TagKind::EndTag => *hidden = hidden.saturating_sub(1),
                        _ => {}
                    }
                }
                if let Some(space) = tag_whitespace(name) {
                    self.push(space, true);
                }
                // Script and style content is raw text to the tokenizer, as to a browser: a
                // `<` in a script is not a tag.
                if tag.kind == TagKind::StartTag && !tag.self_closing {
                    match name {
                        "script" => return TokenSinkResult::RawData(RawKind::ScriptData),
                        "style" => return TokenSinkResult::RawData(RawKind::Rawtext),
                        _ => {}
                    }
                }
            }
            Token::CharacterTokens(text) if *self.hidden.borrow() == 0 => {
                self.text.borrow_mut().push_str(&text);
            }
            _ => {}
        }
        TokenSinkResult::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::render;

    #[test]
    fn tags_stand_for_whitespace_and_text_runs_are_squeezed() {
        assert_eq!(
            render("<p>Hello\n  <b>world</b></p><div>next</div>a<br>b"),
            "\n\nHello world\n\n\nnext\na\nb"
        );
        assert_eq!(
            render("<table><tr><td>$79.95</td></tr><tr><td>4.</td></tr></table>"),
            " $79.95  4. "
        );
        assert_eq!(render("x&nbsp;&amp;&nbsp;y"), "x & y");
    }

    #[test]
    fn script_and_style_are_not_text() {
        assert_eq!(
            render("a<script>if (x<y) { z(); }</script>b<style>p { color: red }</style>c"),
            "abc"
        );
    }

    #[test]
    fn text_after_a_tag_break_keeps_its_space_when_an_empty_run_came_between() {
        // SpamAssassin's quirk, kept on purpose: rules anchored at a paragraph's start
        // depend on it.
        assert_eq!(
            render("<p>a</p>\n</body>\n</html>\n\nid\n"),
            "\n\na\n\n  id "
        );
    }
}
