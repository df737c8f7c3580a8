//! Post-processors: the special tokens HF `encode(text, add_special_tokens=true)` puts around
//! one sequence (Llama-3's BOS from a `TemplateProcessing`, RoBERTa's `<s> … </s>`). For a single
//! sequence every supported post-processor comes down to ids before and ids after the text, which
//! is also what the shard stage needs to apply "the file's own BOS/EOS policy".

use anyhow::{anyhow, bail, Result};
use serde_json::Value;

/// The post-processor types that [`PostProcessor::from_json`] accepts.
const SUPPORTED: &str =
    "ByteLevel, TemplateProcessing, RobertaProcessing, BertProcessing and Sequence";

/// Ids a tokenizer's post-processor adds around one sequence.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PostProcessor {
    /// Ids before the text.
    pub before: Vec<u32>,
    /// Ids after the text.
    pub after: Vec<u32>,
}

impl PostProcessor {
    /// Parses the `post_processor` field of a tokenizer.json; null adds nothing. Unknown types and
    /// templates that do not hold the sequence exactly once are errors naming the field.
    pub fn from_json(value: &Value) -> Result<PostProcessor> {
        let mut out = PostProcessor::default();
        if !value.is_null() {
            out.wrap(value, "post_processor")?;
        }
        Ok(out)
    }

    /// Adds what the processor `value` (at `path`) adds, as HF runs a `Sequence` of processors
    /// one after the other: only one of them may add tokens.
    fn wrap(&mut self, value: &Value, path: &str) -> Result<()> {
        let kind = value["type"]
            .as_str()
            .ok_or_else(|| anyhow!("{path} has no \"type\": {value}"))?;
        let (before, after) = match kind {
            // Only changes offsets.
            "ByteLevel" => return Ok(()),
            "Sequence" => {
                let list = value["processors"]
                    .as_array()
                    .ok_or_else(|| anyhow!("{path}.processors is missing or not a list"))?;
                for (i, item) in list.iter().enumerate() {
                    self.wrap(item, &format!("{path}.processors[{i}]"))?;
                }
                return Ok(());
            }
            "RobertaProcessing" | "BertProcessing" => {
                let id = |field: &str| {
                    value[field][1]
                        .as_u64()
                        .and_then(|id| u32::try_from(id).ok())
                        .ok_or_else(|| anyhow!("{path}.{field} is not [token, id]: {value}"))
                };
                (vec![id("cls")?], vec![id("sep")?])
            }
            "TemplateProcessing" => template(value, path)?,
            other => bail!(
                "unsupported post-processor {path}.type = {other:?}: whale supports {SUPPORTED}"
            ),
        };
        if !(self.before.is_empty() && self.after.is_empty()) {
            // HF hands the next processor the special tokens and the text as separate encodings
            // (a second template would see a pair); nothing a real file wants.
            bail!(
                "unsupported post-processor {path}: it follows one that already added special \
                 tokens, and HF would apply it to each piece separately"
            );
        }
        (self.before, self.after) = (before, after);
        Ok(())
    }
}

/// The special ids of a `TemplateProcessing`'s `single` template before and after `$A`.
fn template(value: &Value, path: &str) -> Result<(Vec<u32>, Vec<u32>)> {
    let pieces = value["single"]
        .as_array()
        .ok_or_else(|| anyhow!("{path}.single is missing or not a list"))?;
    let (mut before, mut after) = (Vec::new(), Vec::new());
    let mut seen_sequence = false;
    for piece in pieces {
        if let Some(seq) = piece.get("Sequence") {
            if seen_sequence || seq["id"] != "A" {
                bail!(
                    "unsupported post-processor {path}.single = {}: whale supports single-sequence \
                     templates that hold $A exactly once",
                    value["single"]
                );
            }
            seen_sequence = true;
        } else if let Some(name) = piece["SpecialToken"]["id"].as_str() {
            let ids = value["special_tokens"][name]["ids"]
                .as_array()
                .ok_or_else(|| anyhow!("{path}.special_tokens has no ids for {name:?}"))?;
            let side = if seen_sequence {
                &mut after
            } else {
                &mut before
            };
            for id in ids {
                side.push(
                    id.as_u64()
                        .and_then(|id| u32::try_from(id).ok())
                        .ok_or_else(|| {
                            anyhow!("{path}.special_tokens[{name:?}] has a bad id {id}")
                        })?,
                );
            }
        } else {
            bail!("{path}.single has a malformed piece: {piece}");
        }
    }
    if !seen_sequence {
        bail!(
            "unsupported post-processor {path}.single = {}: the template drops the text ($A)",
            value["single"]
        );
    }
    Ok((before, after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: Value) -> (Vec<u32>, Vec<u32>) {
        let p = PostProcessor::from_json(&value).unwrap();
        (p.before, p.after)
    }

    #[test]
    fn processors_add_ids_around_the_text() {
        let template = json!({"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                       {"SpecialToken": {"id": "</s>", "type_id": 0}}],
            "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [1, 7], "tokens": ["<s>", "x"]},
                                            "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}}});
        assert_eq!(parse(template.clone()), (vec![1, 7], vec![2]));
        let byte_level = json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true});
        let seq = json!({"type": "Sequence", "processors": [byte_level, template]});
        assert_eq!(parse(seq), (vec![1, 7], vec![2]));
        let bert = json!({"type": "BertProcessing", "cls": ["[CLS]", 101], "sep": ["[SEP]", 102]});
        assert_eq!(parse(bert.clone()), (vec![101], vec![102]));
        let twice = json!({"type": "Sequence", "processors": [bert.clone(), bert]});
        let err = PostProcessor::from_json(&twice).unwrap_err().to_string();
        assert!(err.contains("post_processor.processors[1]"), "{err}");
        assert_eq!(parse(Value::Null), (vec![], vec![]));
    }
}
