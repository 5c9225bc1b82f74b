//! CEL (the Common Expression Language) for admission: compiling the expressions of
//! ValidatingAdmissionPolicies and webhook match conditions (a compile error is a validation
//! error, as kube-apiserver reports it), and evaluating them over JSON bindings.

use serde_json::Value;

/// A compiled expression.
pub struct Expression {
    program: cel::Program,
    source: String,
}

/// Compiles `source`; the error is kube-apiserver's wording (`compilation failed: ...`).
pub fn compile(source: &str) -> Result<Expression, String> {
    if source.trim().is_empty() {
        return Err("compilation failed: expression is empty".into());
    }
    match std::panic::catch_unwind(|| cel::Program::compile(source)) {
        Ok(Ok(program)) => Ok(Expression { program, source: source.to_string() }),
        Ok(Err(errors)) => Err(format!("compilation failed: ERROR: <input>: {errors}")),
        Err(_) => Err("compilation failed: the expression could not be parsed".into()),
    }
}

impl Expression {
    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the expression with `bindings` (name, JSON value) in scope.
    pub fn evaluate(&self, bindings: &[(&str, &Value)]) -> Result<Value, String> {
        let mut context = cel::Context::default();
        for (name, value) in bindings {
            context.add_variable_from_value(*name, to_cel(value));
        }
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.program.execute(&context)))
            .map_err(|_| format!("expression '{}' could not be evaluated", self.source))?;
        let value = result.map_err(|e| format!("expression '{}' resulted in error: {e}", self.source))?;
        value.json().map_err(|e| format!("expression '{}' returned an unsupported value: {e:?}", self.source))
    }
}

/// A JSON value as Kubernetes' CEL sees it: whole numbers are `int`s.
fn to_cel(value: &Value) -> cel::Value {
    match value {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => cel::Value::Int(i),
            (None, Some(u)) => cel::Value::UInt(u),
            _ => cel::Value::Float(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => cel::Value::String(s.clone().into()),
        Value::Array(items) => cel::Value::List(items.iter().map(to_cel).collect::<Vec<_>>().into()),
        Value::Object(map) => {
            let entries: std::collections::HashMap<String, cel::Value> =
                map.iter().map(|(k, v)| (k.clone(), to_cel(v))).collect();
            cel::Value::from(entries)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn bad_expressions_fail_to_compile() {
        let error = compile("... [] bad expression").err().unwrap();
        assert!(error.starts_with("compilation failed"), "{error}");
    }

    #[test]
    fn expressions_see_their_bindings() {
        let object = json!({"spec": {"replicas": 3}, "metadata": {"name": "web"}});
        let variables = json!({"replicas": 3});
        assert_eq!(compile("object.spec.replicas > 1").unwrap().evaluate(&[("object", &object)]), Ok(json!(true)));
        assert_eq!(
            compile("variables.replicas % 2 == 1").unwrap().evaluate(&[("variables", &variables)]),
            Ok(json!(true))
        );
        assert_eq!(
            compile("'name is ' + object.metadata.name").unwrap().evaluate(&[("object", &object)]),
            Ok(json!("name is web"))
        );
        assert!(compile("'n' + object.spec.replicas").unwrap().evaluate(&[("object", &object)]).is_err());
    }
}
