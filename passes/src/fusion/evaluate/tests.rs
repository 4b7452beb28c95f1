//! The evaluator against numbers worked out by hand, with numpy, or read from ONNX Runtime
//! 1.31 (noted where ONNX Runtime and numpy differ).

use half::f16;
use ndarray::{ArrayD, IxDyn};

use super::*;
use crate::ir::attr_int;
use crate::ir::attr_ints;
use crate::ir::make_node;
use crate::ir::proto::AttributeProto;

const NO_LIMIT: usize = usize::MAX;

fn f32s(shape: &[usize], values: &[f32]) -> Value {
    Value::F32(ArrayD::from_shape_vec(IxDyn(shape), values.to_vec()).unwrap())
}

fn i64s(shape: &[usize], values: &[i64]) -> Value {
    Value::I64(ArrayD::from_shape_vec(IxDyn(shape), values.to_vec()).unwrap())
}

fn i32s(shape: &[usize], values: &[i32]) -> Value {
    Value::I32(ArrayD::from_shape_vec(IxDyn(shape), values.to_vec()).unwrap())
}

fn bools(shape: &[usize], values: &[bool]) -> Value {
    Value::Bool(ArrayD::from_shape_vec(IxDyn(shape), values.to_vec()).unwrap())
}

fn counting(shape: &[usize]) -> Value {
    let count: usize = shape.iter().product();
    i64s(shape, &(0..count as i64).collect::<Vec<_>>())
}

/// Evaluates one node of `op` with `attributes` on `inputs`.
fn eval<const N: usize>(
    op: &str,
    attributes: Vec<AttributeProto>,
    inputs: [Value; N],
) -> Result<Value, EvalError> {
    eval_limited(op, attributes, inputs, NO_LIMIT)
}

fn eval_limited<const N: usize>(
    op: &str,
    attributes: Vec<AttributeProto>,
    inputs: [Value; N],
    max_bytes: usize,
) -> Result<Value, EvalError> {
    let names: Vec<String> = (0..inputs.len()).map(|i| format!("in{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut node = make_node(op, &names, &["out"], op);
    node.attribute = attributes;
    let inputs: Vec<Option<Value>> = inputs.into_iter().map(Some).collect();
    evaluate(&node, &inputs, max_bytes)
}

fn values_f32(value: &Value) -> Vec<f32> {
    match value {
        Value::F32(a) => a.iter().copied().collect(),
        other => panic!("not float32: {other:?}"),
    }
}

fn values_i64(value: &Value) -> Vec<i64> {
    match value {
        Value::I64(a) => a.iter().copied().collect(),
        other => panic!("not int64: {other:?}"),
    }
}

#[test]
fn subtraction_broadcasts_like_numpy() {
    let a = f32s(&[2, 1, 3], &[1., 2., 3., 4., 5., 6.]);
    let b = f32s(&[4, 1], &[10., 20., 30., 40.]);

    let result = eval("Sub", vec![], [a, b]).unwrap();

    // numpy: (a - b).flatten() for a (2, 1, 3) and b (4, 1).
    assert_eq!(result.shape(), &[2, 4, 3]);
    let expected = [
        -9., -8., -7., -19., -18., -17., -29., -28., -27., -39., -38., -37., -6., -5., -4., -16.,
        -15., -14., -26., -25., -24., -36., -35., -34.,
    ];
    assert_eq!(values_f32(&result), expected);
}

#[test]
fn shapes_that_do_not_broadcast_are_invalid() {
    let error = eval("Add", vec![], [f32s(&[3], &[1., 2., 3.]), f32s(&[2], &[1., 2.])]);

    assert!(matches!(error, Err(EvalError::Invalid(ref r)) if r.contains("do not broadcast")));
}

#[test]
fn float32_division_rounds_in_float32() {
    let result = eval("Div", vec![], [f32s(&[], &[0.1]), f32s(&[1], &[3.])]).unwrap();

    // numpy: np.float32(0.1) / np.float32(3) = 0.033333335; a scalar and a [1] give [1].
    assert_eq!(result.shape(), &[1]);
    assert_eq!(values_f32(&result), [0.033_333_335]);
}

#[test]
fn integer_division_truncates_and_modulo_takes_the_divisor_sign() {
    let a = i64s(&[2], &[-7, 7]);

    let quotient = eval("Div", vec![], [a.clone(), i64s(&[], &[2])]).unwrap();
    let modulo = eval("Mod", vec![], [a.clone(), i64s(&[], &[-2])]).unwrap();
    let fmod = eval("Mod", vec![attr_int("fmod", 1)], [a, i64s(&[], &[-2])]).unwrap();

    // ONNX Runtime: Div gives [-3, 3]; Mod (fmod=0) [-1, -1]; C's fmod [-1, 1].
    assert_eq!(values_i64(&quotient), [-3, 3]);
    assert_eq!(values_i64(&modulo), [-1, -1]);
    assert_eq!(values_i64(&fmod), [-1, 1]);
}

#[test]
fn integer_division_by_zero_is_not_evaluated() {
    let error = eval("Div", vec![], [i64s(&[2], &[1, 2]), i64s(&[2], &[1, 0])]).unwrap_err();

    assert!(matches!(error, EvalError::Invalid(ref r) if r.contains("by zero")), "{error:?}");
}

#[test]
fn int32_addition_wraps_in_int32() {
    let result = eval("Add", vec![], [i32s(&[2], &[i32::MAX, -5]), i32s(&[1], &[1])]).unwrap();

    // ONNX Runtime: [-2147483648, -4].
    assert_eq!(result, i32s(&[2], &[i32::MIN, -4]));
}

#[test]
fn mixed_element_types_are_invalid() {
    let error = eval("Mul", vec![], [i64s(&[1], &[2]), i32s(&[1], &[3])]).unwrap_err();

    assert!(matches!(error, EvalError::Invalid(_)), "{error:?}");
}

#[test]
fn float16_arithmetic_is_not_covered() {
    let half = Value::F16(ArrayD::from_elem(IxDyn(&[2]), f16::from_f32(1.5)));

    let error = eval("Add", vec![], [half.clone(), half]).unwrap_err();

    assert_eq!(error, EvalError::NotCovered("Add on FLOAT16 is not evaluated".into()));
}

#[test]
fn pow_follows_onnx_runtime_for_each_type_pair() {
    let base = i64s(&[3], &[3, -2, 1_000_000]);
    let float_base = f32s(&[3], &[1.5, -2., 4.]);

    let squared = eval("Pow", vec![], [base.clone(), i64s(&[1], &[2])]).unwrap();
    let mixed = eval("Pow", vec![], [base, i64s(&[3], &[2, 3, 3])]).unwrap();
    let by_ints = eval("Pow", vec![], [float_base.clone(), i64s(&[3], &[2, 3, -1])]).unwrap();
    let by_floats = eval("Pow", vec![], [float_base, f32s(&[3], &[0.5, 1.5, 2.5])]).unwrap();

    // ONNX Runtime 1.31's outputs for the same inputs. For 1.5 ** 0.5 numpy's float32 power
    // says 1.2247448; ONNX Runtime and the correctly rounded value are 1.2247449.
    assert_eq!(values_i64(&squared), [9, 4, 1_000_000_000_000]);
    assert_eq!(values_i64(&mixed), [9, -8, 1_000_000_000_000_000_000]);
    assert_eq!(values_f32(&by_ints), [2.25, -8., 0.25]);
    let floats = values_f32(&by_floats);
    assert_eq!(floats[0], 1.224_744_9);
    assert!(floats[1].is_nan());
    assert_eq!(floats[2], 32.);
}

#[test]
fn integer_pow_out_of_range_is_not_evaluated() {
    let error = eval("Pow", vec![], [i64s(&[1], &[-2]), f32s(&[1], &[0.5])]).unwrap_err();

    assert!(matches!(error, EvalError::Invalid(_)), "{error:?}");
}

#[test]
fn min_and_max_are_variadic_broadcast_and_propagate_nan() {
    let a = f32s(&[3], &[f32::NAN, 1., 2.]);
    let b = f32s(&[3], &[0., f32::NAN, 3.]);
    let c = f32s(&[], &[2.5]);

    let min = values_f32(&eval("Min", vec![], [a.clone(), b.clone(), c.clone()]).unwrap());
    let max = values_f32(&eval("Max", vec![], [a, b, c]).unwrap());

    // ONNX Runtime: Min(a, b) = [nan, nan, 2], Max(a, b) = [nan, nan, 3]; then with 2.5.
    assert!(min[0].is_nan() && min[1].is_nan() && min[2] == 2.);
    assert!(max[0].is_nan() && max[1].is_nan() && max[2] == 3.);
}

#[test]
fn unary_maths_in_the_input_type() {
    let x = f32s(&[4], &[4., 2., -1.5, 0.]);

    let sqrt = values_f32(&eval("Sqrt", vec![], [x.clone()]).unwrap());
    let reciprocal = values_f32(&eval("Reciprocal", vec![], [x.clone()]).unwrap());
    let neg = eval("Neg", vec![], [i64s(&[2], &[i64::MIN, 5])]).unwrap();
    let floor = values_f32(&eval("Floor", vec![], [x]).unwrap());

    assert_eq!(sqrt[..2], [2., std::f32::consts::SQRT_2]);
    assert!(sqrt[2].is_nan() && sqrt[3] == 0.);
    assert_eq!(reciprocal, [0.25, 0.5, -2. / 3., f32::INFINITY]);
    assert_eq!(values_i64(&neg), [i64::MIN, -5]);
    assert_eq!(floor, [4., 2., -2., 0.]);
    assert!(matches!(eval("Sqrt", vec![], [i64s(&[1], &[4])]), Err(EvalError::NotCovered(_))));
}

#[test]
fn comparisons_give_booleans_and_where_selects_with_broadcasting() {
    let condition = eval("Equal", vec![], [i64s(&[2, 1], &[1, 2]), i64s(&[3], &[1, 2, 1])]);
    let condition = condition.unwrap();
    let less = eval("Less", vec![], [f32s(&[2], &[1., f32::NAN]), f32s(&[], &[2.])]).unwrap();

    let selected =
        eval("Where", vec![], [condition.clone(), f32s(&[], &[1.]), f32s(&[3], &[-1., -2., -3.])]);

    assert_eq!(condition, bools(&[2, 3], &[true, false, true, false, true, false]));
    assert_eq!(less, bools(&[2], &[true, false]));
    assert_eq!(values_f32(&selected.unwrap()), [1., -2., 1., -1., 1., -3.]);
    let equal_bools = eval("Equal", vec![], [bools(&[2], &[true, false]), bools(&[], &[false])]);
    assert_eq!(equal_bools.unwrap(), bools(&[2], &[false, true]));
    let not = eval("Not", vec![], [bools(&[2], &[true, false])]).unwrap();
    assert_eq!(not, bools(&[2], &[false, true]));
}

#[test]
fn cast_rounds_like_onnx_runtime() {
    let to = |t: DataType| vec![attr_int("to", t as i64)];
    let doubles = Value::F64(
        ArrayD::from_shape_vec(IxDyn(&[2]), vec![1. + 2f64.powi(-11) + 2f64.powi(-40), 0.1])
            .unwrap(),
    );

    let halves = eval("Cast", to(DataType::Float16), [doubles]).unwrap();
    let back = eval("Cast", to(DataType::Float), [halves.clone()]).unwrap();
    let truncated = eval("Cast", to(DataType::Int32), [f32s(&[2], &[2.7, -2.7])]).unwrap();
    let wrapped = eval("Cast", to(DataType::Int8), [i64s(&[2], &[300, -129])]).unwrap();
    let truth = eval("Cast", to(DataType::Bool), [f32s(&[3], &[0., f32::NAN, -0.5])]).unwrap();
    let big = eval("Cast", to(DataType::Float16), [i64s(&[2], &[16_777_217, 300])]).unwrap();

    // ONNX Runtime casts float64 to float16 through float32: 1 + 2^-11 + 2^-40 first rounds
    // to 1 + 2^-11, a tie, then to 1.0 (numpy's direct rounding gives 1.0009765625).
    assert_eq!(back, f32s(&[2], &[1.0, 0.099_975_586]));
    assert_eq!(truncated, i32s(&[2], &[2, -2]));
    assert_eq!(wrapped, Value::I8(ArrayD::from_shape_vec(IxDyn(&[2]), vec![44, 127]).unwrap()));
    assert_eq!(truth, bools(&[3], &[false, true, true]));
    let Value::F16(big) = big else { panic!("not float16") };
    assert_eq!(big.iter().map(|h| h.to_f32()).collect::<Vec<_>>(), [f32::INFINITY, 300.]);
}

#[test]
fn cast_of_a_float_out_of_an_integer_range_is_not_evaluated() {
    let to = vec![attr_int("to", DataType::Uint8 as i64)];

    let negative = eval("Cast", to.clone(), [f32s(&[1], &[-2.7])]).unwrap_err();
    let nan = eval("Cast", vec![attr_int("to", DataType::Int64 as i64)], [f32s(&[1], &[f32::NAN])]);

    // ONNX Runtime gives 254 for the first (through int32) and INT64_MIN for NaN.
    assert!(matches!(negative, EvalError::Invalid(_)));
    assert!(matches!(nan, Err(EvalError::Invalid(_))));
}

#[test]
fn tensors_read_from_typed_fields_and_raw_data_and_write_back() {
    use crate::ir::proto::TensorProto;
    let halves = TensorProto {
        dims: vec![2],
        data_type: Some(DataType::Float16 as i32),
        int32_data: vec![
            i32::from(f16::from_f32(0.5).to_bits()),
            i32::from(f16::from_f32(-2.).to_bits()),
        ],
        ..TensorProto::default()
    };
    let flags = TensorProto {
        dims: vec![3],
        data_type: Some(DataType::Bool as i32),
        int32_data: vec![1, 0, 1],
        ..TensorProto::default()
    };

    let value = Value::from_tensor(&halves).unwrap();
    let written = value.to_tensor("h");

    assert_eq!(value.cast(DataType::Float).unwrap(), f32s(&[2], &[0.5, -2.]));
    assert_eq!(written.raw_data.as_ref().map(|raw| raw.len()), Some(4));
    assert_eq!(Value::from_tensor(&written).unwrap(), value);
    assert_eq!(Value::from_tensor(&flags).unwrap(), bools(&[3], &[true, false, true]));
    let ints = crate::ir::tensor_from_i64("i", &ndarray::arr1(&[5i64, -1]).into_dyn());
    assert_eq!(Value::from_tensor(&ints).unwrap(), i64s(&[2], &[5, -1]));
}

#[test]
fn reshape_copies_zeros_and_infers_minus_one() {
    let data = counting(&[2, 3, 4]);

    let result = eval("Reshape", vec![], [data.clone(), i64s(&[2], &[0, -1])]).unwrap();
    let zero_kept =
        eval("Reshape", vec![attr_int("allowzero", 1)], [data.clone(), i64s(&[2], &[0, -1])]);
    let wrong = eval("Reshape", vec![], [data, i64s(&[2], &[5, -1])]);

    assert_eq!(result.shape(), &[2, 12]);
    assert!(matches!(zero_kept, Err(EvalError::Invalid(_))));
    assert!(matches!(wrong, Err(EvalError::Invalid(_))));
}

#[test]
fn transpose_slice_and_gather_move_elements_like_numpy() {
    let data = counting(&[2, 3, 4]);

    let transposed =
        eval("Transpose", vec![attr_ints("perm", &[2, 0, 1])], [data.clone()]).unwrap();
    let sliced = eval(
        "Slice",
        vec![],
        [
            data.clone(),
            i64s(&[2], &[-1, 1]),
            i64s(&[2], &[i64::MIN, i64::MAX]),
            i64s(&[2], &[1, 2]),
            i64s(&[2], &[-2, 1]),
        ],
    )
    .unwrap();
    let gathered =
        eval("Gather", vec![attr_int("axis", 1)], [data.clone(), i64s(&[2], &[-1, 0])]).unwrap();
    let scalar_index = eval("Gather", vec![], [i64s(&[3], &[7, 8, 9]), i64s(&[], &[-1])]).unwrap();

    // numpy: x.transpose(2, 0, 1), x[:, ::-2, 1:], np.take(x, [-1, 0], axis=1).
    assert_eq!(transposed.shape(), &[4, 2, 3]);
    assert_eq!(
        values_i64(&transposed),
        [0, 4, 8, 12, 16, 20, 1, 5, 9, 13, 17, 21, 2, 6, 10, 14, 18, 22, 3, 7, 11, 15, 19, 23]
    );
    assert_eq!(sliced.shape(), &[2, 2, 3]);
    assert_eq!(values_i64(&sliced), [9, 10, 11, 1, 2, 3, 21, 22, 23, 13, 14, 15]);
    assert_eq!(gathered.shape(), &[2, 2, 4]);
    assert_eq!(values_i64(&gathered), [8, 9, 10, 11, 0, 1, 2, 3, 20, 21, 22, 23, 12, 13, 14, 15]);
    assert_eq!(scalar_index, i64s(&[], &[9]));
    let out_of_range = eval("Gather", vec![], [i64s(&[3], &[7, 8, 9]), i64s(&[1], &[3])]);
    assert!(matches!(out_of_range, Err(EvalError::Invalid(_))));
}

#[test]
fn slice_of_opset_1_reads_attributes_and_clamps() {
    let attributes =
        vec![attr_ints("starts", &[1]), attr_ints("ends", &[100]), attr_ints("axes", &[0])];

    let result = eval("Slice", attributes, [i64s(&[4], &[5, 6, 7, 8])]).unwrap();

    assert_eq!(result, i64s(&[3], &[6, 7, 8]));
}

#[test]
fn squeeze_unsqueeze_flatten_and_concat() {
    let data = counting(&[1, 3, 1]);

    let squeezed = eval("Squeeze", vec![], [data.clone()]).unwrap();
    let one_axis = eval("Squeeze", vec![], [data.clone(), i64s(&[1], &[-1])]).unwrap();
    let old_style =
        eval("Unsqueeze", vec![attr_ints("axes", &[0, 2])], [squeezed.clone()]).unwrap();
    let new_style = eval("Unsqueeze", vec![], [squeezed.clone(), i64s(&[2], &[-1, 0])]).unwrap();
    let flattened = eval("Flatten", vec![attr_int("axis", 2)], [data.clone()]).unwrap();
    let joined =
        eval("Concat", vec![attr_int("axis", 0)], [i64s(&[1], &[2]), i64s(&[2], &[-1, 64])]);

    assert_eq!(squeezed.shape(), &[3]);
    assert_eq!(one_axis.shape(), &[1, 3]);
    assert_eq!(old_style.shape(), &[1, 3, 1]);
    assert_eq!(new_style.shape(), &[1, 3, 1]);
    assert_eq!(flattened.shape(), &[3, 1]);
    assert_eq!(joined.unwrap(), i64s(&[3], &[2, -1, 64]));
    assert!(matches!(
        eval("Squeeze", vec![], [data, i64s(&[1], &[1])]),
        Err(EvalError::Invalid(_))
    ));
}

#[test]
fn expand_constant_of_shape_and_range() {
    let expanded = eval("Expand", vec![], [f32s(&[3, 1], &[1., 2., 3.]), i64s(&[3], &[2, 1, 2])]);
    let filled = eval("ConstantOfShape", vec![], [i64s(&[2], &[2, 3])]).unwrap();
    let fill = crate::ir::attr_tensor(
        "value",
        crate::ir::tensor_from_i64("", &ndarray::arr1(&[7i64]).into_dyn()),
    );
    let sevens = eval("ConstantOfShape", vec![fill], [i64s(&[1], &[2])]).unwrap();
    let floats = eval("Range", vec![], [f32s(&[], &[0.1]), f32s(&[], &[1.]), f32s(&[], &[0.3])]);
    let down = eval("Range", vec![], [i64s(&[], &[10]), i64s(&[], &[4]), i64s(&[], &[-2])]);

    assert_eq!(values_f32(&expanded.unwrap()), [1., 1., 2., 2., 3., 3., 1., 1., 2., 2., 3., 3.]);
    assert_eq!(filled, f32s(&[2, 3], &[0.; 6]));
    assert_eq!(sevens, i64s(&[2], &[7, 7]));
    // ONNX Runtime adds the step in float32: the third value is 0.70000005, not 0.7.
    assert_eq!(values_f32(&floats.unwrap()), [0.1, 0.4, 0.700_000_05]);
    assert_eq!(values_i64(&down.unwrap()), [10, 8, 6]);
}

#[test]
fn growth_past_the_limit_is_refused_before_computing() {
    let shape = i64s(&[2], &[1000, 1000]);

    let expand = eval_limited("Expand", vec![], [f32s(&[1], &[1.]), shape.clone()], 1 << 20);
    let filled = eval_limited("ConstantOfShape", vec![], [shape], 1 << 20);
    let outer = eval_limited("Add", vec![], [counting(&[1000, 1]), counting(&[1000])], 1 << 20);

    assert_eq!(expand, Err(EvalError::TooLarge { bytes: 4_000_000 }));
    assert_eq!(filled, Err(EvalError::TooLarge { bytes: 4_000_000 }));
    assert_eq!(outer, Err(EvalError::TooLarge { bytes: 8_000_000 }));
}

#[test]
fn shape_and_size_of_static_dimensions() {
    let dims = [2, 3, 4];

    assert_eq!(shape_of(&dims, None, None), i64s(&[3], &[2, 3, 4]));
    assert_eq!(shape_of(&dims, Some(-2), None), i64s(&[2], &[3, 4]));
    assert_eq!(shape_of(&dims, Some(1), Some(-5)), i64s(&[0], &[]));
    assert_eq!(size_of(&dims), i64s(&[], &[24]));
}
