//! Typed arguments for reactor exports: JSON numbers checked against the export's signature,
//! and the export's results turned back into JSON-friendly values.

use serde_json::Value;
use wasmedge_sdk::{ValType, WasmValue};

use crate::result::ReturnValue;

/// Converts `args` to WebAssembly values for a function taking `params`. The error says which
/// argument is wrong and why (it becomes the `BadArguments` message).
pub fn to_wasm_values(params: &[ValType], args: &[Value]) -> Result<Vec<WasmValue>, String> {
    if params.len() != args.len() {
        return Err(format!(
            "the export takes {} argument(s) ({}), got {}",
            params.len(),
            describe(params),
            args.len()
        ));
    }
    params
        .iter()
        .zip(args)
        .enumerate()
        .map(|(index, (ty, arg))| {
            convert(*ty, arg).ok_or_else(|| {
                format!(
                    "argument {index} must be {}, got {arg}",
                    type_name(*ty).unwrap_or("an unsupported type")
                )
            })
        })
        .collect()
}

fn convert(ty: ValType, arg: &Value) -> Option<WasmValue> {
    match ty {
        // i32 accepts the signed and the unsigned range (the bits are the same to the guest).
        ValType::I32 => integer(arg)
            .filter(|v| (i32::MIN as i128..=u32::MAX as i128).contains(v))
            .map(|v| WasmValue::from_i32(v as i64 as i32)),
        ValType::I64 => integer(arg)
            .filter(|v| (i64::MIN as i128..=u64::MAX as i128).contains(v))
            .map(|v| WasmValue::from_i64(v as i64)),
        ValType::F32 => arg.as_f64().map(|v| WasmValue::from_f32(v as f32)),
        ValType::F64 => arg.as_f64().map(WasmValue::from_f64),
        _ => None,
    }
}

fn integer(arg: &Value) -> Option<i128> {
    let number = arg.as_number()?;
    number
        .as_i64()
        .map(i128::from)
        .or_else(|| number.as_u64().map(i128::from))
}

fn type_name(ty: ValType) -> Option<&'static str> {
    match ty {
        ValType::I32 => Some("an i32 (integer)"),
        ValType::I64 => Some("an i64 (integer)"),
        ValType::F32 => Some("an f32 (number)"),
        ValType::F64 => Some("an f64 (number)"),
        _ => None,
    }
}

fn describe(params: &[ValType]) -> String {
    params
        .iter()
        .map(|ty| format!("{ty:?}").to_lowercase())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether every parameter type can be given as JSON.
pub fn supported(params: &[ValType]) -> bool {
    params.iter().all(|ty| type_name(*ty).is_some())
}

/// Converts a returned value.
pub fn to_return_value(value: &WasmValue) -> ReturnValue {
    let float = |v: f64| {
        if v.is_finite() {
            ReturnValue::Float(v)
        } else {
            ReturnValue::Text(v.to_string())
        }
    };
    match value.ty() {
        ValType::I32 => ReturnValue::Integer(i64::from(value.to_i32())),
        ValType::I64 => ReturnValue::Integer(value.to_i64()),
        ValType::F32 => float(f64::from(value.to_f32())),
        ValType::F64 => float(value.to_f64()),
        other => ReturnValue::Text(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn checks_count_and_types() {
        let params = [ValType::I32, ValType::I32];
        let ok = to_wasm_values(&params, &[json!(1), json!(-2)]).expect("valid");
        assert_eq!(ok[1].to_i32(), -2);
        assert!(to_wasm_values(&params, &[json!(1)]).is_err());
        assert!(to_wasm_values(&params, &[json!(1), json!("2")]).is_err());
        assert!(to_wasm_values(&params, &[json!(1), json!(1.5)]).is_err());
        assert!(to_wasm_values(&params, &[json!(1), json!(1u64 << 40)]).is_err());
        assert_eq!(
            to_wasm_values(&[ValType::I32], &[json!(u32::MAX)]).expect("u32")[0].to_i32(),
            -1
        );
        let f = to_wasm_values(&[ValType::F64], &[json!(2)]).expect("int as float");
        assert_eq!(f[0].to_f64(), 2.0);
    }
}
