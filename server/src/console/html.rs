//! A small HTML builder that escapes every value.
//!
//! Markup (tag and attribute names, fixed text of the console) goes in only as `&'static str`
//! ([`Html::raw`], the tag and attribute names of [`Html::open`]); anything else, whoever
//! typed it (a patient's name from a practice's record, a reason a user gave, a query value),
//! goes through [`Html::text`] or an attribute value, and is escaped. So a value can never
//! become markup: there is no way to hand the builder a runtime string unescaped.

/// A piece of HTML being built.
#[derive(Debug, Default, Clone)]
pub struct Html(String);

/// `s` escaped for HTML text and for a double-quoted attribute value.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

impl Html {
    pub fn new() -> Html {
        Html(String::new())
    }

    /// Fixed markup of the console (never a value: `'static`).
    pub fn raw(&mut self, markup: &'static str) -> &mut Html {
        self.0.push_str(markup);
        self
    }

    /// A value, escaped.
    pub fn text(&mut self, value: &str) -> &mut Html {
        self.0.push_str(&escape(value));
        self
    }

    /// `<tag name="value" ...>`, each value escaped; an empty value of `""` for a boolean
    /// attribute (`required`) is written as the bare name.
    pub fn open(&mut self, tag: &'static str, attrs: &[(&'static str, &str)]) -> &mut Html {
        self.0.push('<');
        self.0.push_str(tag);
        for (name, value) in attrs {
            self.0.push(' ');
            self.0.push_str(name);
            if !value.is_empty() || !is_boolean(name) {
                self.0.push_str("=\"");
                self.0.push_str(&escape(value));
                self.0.push('"');
            }
        }
        self.0.push('>');
        self
    }

    pub fn close(&mut self, tag: &'static str) -> &mut Html {
        self.0.push_str("</");
        self.0.push_str(tag);
        self.0.push('>');
        self
    }

    /// `<tag attrs>value</tag>`, the value escaped.
    pub fn element(
        &mut self,
        tag: &'static str,
        attrs: &[(&'static str, &str)],
        value: &str,
    ) -> &mut Html {
        self.open(tag, attrs).text(value).close(tag)
    }

    /// Another piece, built the same way.
    pub fn append(&mut self, other: &Html) -> &mut Html {
        self.0.push_str(&other.0);
        self
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

fn is_boolean(name: &str) -> bool {
    matches!(
        name,
        "required" | "selected" | "checked" | "disabled" | "hidden" | "open"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_in_text_and_attributes() {
        let mut h = Html::new();
        h.open("input", &[("value", "\"><script>alert(1)</script>")])
            .element("p", &[("class", "x")], "<b>O'Brien & co</b>");
        assert_eq!(
            h.as_str(),
            "<input value=\"&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;\">\
             <p class=\"x\">&lt;b&gt;O&#39;Brien &amp; co&lt;/b&gt;</p>"
        );
    }

    #[test]
    fn a_boolean_attribute_is_its_bare_name() {
        let mut h = Html::new();
        h.open("input", &[("required", ""), ("value", "")]);
        assert_eq!(h.as_str(), "<input required value=\"\">");
    }
}
