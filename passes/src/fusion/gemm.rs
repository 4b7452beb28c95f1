//! The rule that turns a 2-D MatMul and the Add of a bias after it into one Gemm, whose C
//! input takes the bias as long as it broadcasts to the product's shape without changing it.

use super::pattern::{is_op, node_label, Rewrite, Scan};
use super::Rule;
use crate::ir::proto::tensor_proto::DataType;
use crate::ir::shapes::Dim;
use crate::ir::{self};

pub(crate) const MATMUL_ADD: Rule = Rule {
    name: "matmul_add",
    summary: "turns a 2-D float32 MatMul followed by the Add of a bias into one Gemm",
    scan: matmul_add,
};

/// Gemm's C broadcasts by the usual rules from opset 7; before, a `broadcast` attribute
/// said whether it did, which this rule does not write.
const FIRST_OPSET: i64 = 7;

fn matmul_add(scan: &mut Scan<'_, '_>) {
    let view = scan.view;
    for (index, node) in view.graph.node.iter().enumerate() {
        if !is_op(node, "Add") || node.input.len() != 2 || !scan.is_free(index) {
            continue;
        }
        let found = (0..2).find_map(|position| {
            view.producer_of_type(&node.input[position], "MatMul").map(|(mm, _)| (position, mm))
        });
        let Some((position, matmul)) = found else { continue };
        if !scan.is_free(matmul) {
            continue;
        }
        match gemm(scan, index, position, matmul) {
            Ok(rewrite) => {
                scan.offer(rewrite);
            }
            Err(reason) => scan.skip(index, reason),
        }
    }
}

/// The Gemm that replaces the MatMul at `matmul` and the Add at `index`, which reads the
/// product as its input `position`.
fn gemm(
    scan: &mut Scan<'_, '_>,
    index: usize,
    position: usize,
    matmul: usize,
) -> Result<Rewrite, String> {
    let view = scan.view;
    let add = view.node(index);
    let product_node = view.node(matmul);
    let label = node_label(product_node, matmul);
    let product = &add.input[position];
    let bias = &add.input[1 - position];
    if bias == product || !view.only_read_by(product, index) {
        return Err(format!(
            "the output `{product}` of {label} is read by other nodes too or is a graph output"
        ));
    }
    if view.target.opset < FIRST_OPSET {
        return Err(format!(
            "the model's opset {} is older than {FIRST_OPSET}, where Gemm broadcasts C only \
             with its `broadcast` attribute",
            view.target.opset
        ));
    }
    let [a, b] = product_node.input.as_slice() else {
        return Err(format!("{label} has {} inputs, not 2", product_node.input.len()));
    };

    match view.shapes.elem_type(a) {
        Some(t) if t == DataType::Float as i32 => {}
        Some(t) => {
            let type_name = ir::data_type_name(t);
            return Err(format!("{label} multiplies {type_name}; only float32 is made a Gemm"));
        }
        None => return Err(format!("the element type of `{a}`, read by {label}, is unknown")),
    }
    let a_dims = matrix(scan, a, &label, "first")?;
    let b_dims = matrix(scan, b, &label, "second")?;
    let (m, n) = (&a_dims[0], &b_dims[1]);

    let Some(bias_dims) = view.shapes.dims(bias) else {
        return Err(format!("the shape of the bias `{bias}` is unknown"));
    };
    if !broadcasts_to(bias_dims, m, n) {
        return Err(format!(
            "its bias `{bias}` of shape {} does not broadcast to the product's {} without \
             changing it, as Gemm's C must",
            show(bias_dims),
            show(&[m.clone(), n.clone()])
        ));
    }

    let output = add.output.first().filter(|o| !o.is_empty());
    let Some(output) = output else { return Err("its output is omitted".into()) };
    let name = scan.fresh(match product_node.name() {
        "" => "Gemm",
        name => name,
    });
    let node = ir::make_node("Gemm", &[a, b, bias], &[output], &name);
    Ok(Rewrite { remove: vec![matmul, index], add: vec![node], ..Rewrite::default() })
}

/// The dimensions of `value`, the `which` input of the MatMul `label`, when it is 2-D.
fn matrix(scan: &Scan<'_, '_>, value: &str, label: &str, which: &str) -> Result<Vec<Dim>, String> {
    let Some(dims) = scan.view.shapes.dims(value) else {
        return Err(format!("the rank of `{value}`, the {which} input of {label}, is unknown"));
    };
    if dims.len() != 2 {
        return Err(format!(
            "`{value}`, the {which} input of {label}, has rank {} (shape {}); Gemm multiplies \
             2-D matrices only",
            dims.len(),
            show(dims)
        ));
    }
    Ok(dims.to_vec())
}

/// Whether a bias of `dims` broadcasts to [m, n] unchanged: rank 2 at most, each dimension
/// 1 or the one it meets (a known size, or the same named symbol).
fn broadcasts_to(dims: &[Dim], m: &Dim, n: &Dim) -> bool {
    let Some(offset) = 2usize.checked_sub(dims.len()) else { return false };
    let fits = |dim: &Dim, target: &Dim| match dim {
        Dim::Known(1) => true,
        Dim::Unknown => false,
        _ => dim == target,
    };
    dims.iter().enumerate().all(|(i, dim)| fits(dim, if i + offset == 0 { m } else { n }))
}

/// Dimensions as `[N, 64]`, `?` for an unknown one.
fn show(dims: &[Dim]) -> String {
    let parts: Vec<String> = dims
        .iter()
        .map(|d| match d {
            Dim::Known(size) => size.to_string(),
            Dim::Symbol(name) => name.clone(),
            Dim::Unknown => "?".into(),
        })
        .collect();
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bias_broadcasts_when_each_dimension_is_one_or_the_same() {
        let m = Dim::Symbol("batch".into());
        let n = Dim::Known(8);
        let fits = |dims: &[Dim]| broadcasts_to(dims, &m, &n);
        assert!(fits(&[]));
        assert!(fits(&[Dim::Known(8)]));
        assert!(fits(&[Dim::Known(1), Dim::Known(8)]));
        assert!(fits(&[m.clone(), Dim::Known(1)]));
        assert!(fits(&[m.clone(), Dim::Known(8)]));
        assert!(!fits(&[Dim::Known(4)]));
        assert!(!fits(&[Dim::Symbol("other".into()), Dim::Known(8)]));
        assert!(!fits(&[Dim::Unknown]));
        assert!(!fits(&[Dim::Known(1), Dim::Known(1), Dim::Known(8)]));
    }
}
