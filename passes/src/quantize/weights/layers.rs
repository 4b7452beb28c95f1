//! Which MatMuls `more_bits` keeps at 8 bits: llama.cpp's Q4_K_M rule over transformer layers.
//!
//! With `L` layers, layer `i` gets more bits when `i < L/8`, `i >= 7L/8` or
//! `(i - L/8) % 3 == 2` (integer division). A node's layer is the block number in its name or
//! its weight's name (`layers.3.`, `layer.3.`, `h.3.`, `blocks.3.`, `block_3`, `/layers.3/`);
//! when some candidate has none, every quantized MatMul in graph order is its own layer.

use std::sync::OnceLock;

use regex::Regex;

/// The transformer block number written in `name`, if any.
pub fn layer_number(name: &str) -> Option<usize> {
    static PATTERN: OnceLock<Option<Regex>> = OnceLock::new();
    let pattern = PATTERN
        .get_or_init(|| {
            Regex::new(r"(?:^|[^A-Za-z0-9])(?:layers?|h|blocks?)[._](\d+)(?:\D|$)").ok()
        })
        .as_ref()?;
    pattern.captures(name)?.get(1)?.as_str().parse().ok()
}

/// Whether layer `layer` of `layers` is kept at 8 bits (llama.cpp's `use_more_bits`).
pub fn uses_more_bits(layer: usize, layers: usize) -> bool {
    let eighth = layers / 8;
    // `layer - eighth` runs only once `layer < eighth` is false.
    layer < eighth || layer >= 7 * layers / 8 || (layer - eighth) % 3 == 2
}

/// How the layers of the candidates were found, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerSource {
    /// From the block numbers in node or weight names.
    Names { layers: usize },
    /// Each MatMul in graph order is a layer.
    Order { layers: usize },
}

/// For each candidate, given as its (node name, weight name) in graph order, whether it gets
/// more bits, and how layers were counted.
pub fn select(candidates: &[(&str, &str)]) -> (Vec<bool>, LayerSource) {
    let numbers: Option<Vec<usize>> = candidates
        .iter()
        .map(|(node, weight)| layer_number(node).or_else(|| layer_number(weight)))
        .collect();
    match numbers {
        Some(numbers) if !numbers.is_empty() => {
            let layers = numbers.iter().max().map_or(0, |max| max + 1);
            let chosen = numbers.iter().map(|&i| uses_more_bits(i, layers)).collect();
            (chosen, LayerSource::Names { layers })
        }
        _ => {
            let layers = candidates.len();
            let chosen = (0..layers).map(|i| uses_more_bits(i, layers)).collect();
            (chosen, LayerSource::Order { layers })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_numbers_come_from_common_naming_schemes() {
        assert_eq!(layer_number("model.layers.3.mlp.down_proj.weight"), Some(3));
        assert_eq!(layer_number("/model/layers.12/self_attn/q_proj/MatMul"), Some(12));
        assert_eq!(layer_number("encoder.layer.7.attention"), Some(7));
        assert_eq!(layer_number("transformer.h.0.mlp.c_fc"), Some(0));
        assert_eq!(layer_number("blocks.5.attn"), Some(5));
        assert_eq!(layer_number("block_2_matmul"), Some(2));
        assert_eq!(layer_number("branch_3"), None);
        assert_eq!(layer_number("lm_head"), None);
    }

    #[test]
    fn more_bits_follows_llama_cpp_for_32_layers() {
        // L = 32: L/8 = 4, 7L/8 = 28; middle layers 4..28 where (i - 4) % 3 == 2.
        let chosen: Vec<usize> = (0..32).filter(|&i| uses_more_bits(i, 32)).collect();
        assert_eq!(chosen, [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]);
    }
}
