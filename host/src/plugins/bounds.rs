//! How much compiling a plugin may cost. Compilation runs in the gateway's process, and its
//! time and memory grow with the code: a small file declaring 200,000 functions took ~5 s and
//! ~1 GiB to compile. A component is read with wasmparser first (cheap, no code generated),
//! and one past either bound is refused before the compiler sees it.

/// The largest component file compiled, in bytes (`[plugins] max_component_mib`).
pub const DEFAULT_MAX_BYTES: usize = (crate::config::DEFAULT_MAX_COMPONENT_MIB as usize) << 20;

/// The most function bodies compiled across a component's core modules
/// (`[plugins] max_functions`).
pub const DEFAULT_MAX_FUNCTIONS: u64 = crate::config::DEFAULT_MAX_FUNCTIONS;

/// What a component may be to be compiled.
#[derive(Debug, Clone, Copy)]
pub struct CompileBounds {
    pub max_bytes: usize,
    pub max_functions: u64,
}

impl Default for CompileBounds {
    fn default() -> Self {
        CompileBounds {
            max_bytes: DEFAULT_MAX_BYTES,
            max_functions: DEFAULT_MAX_FUNCTIONS,
        }
    }
}

impl CompileBounds {
    /// Why `bytes` may not be compiled, if so.
    pub fn refuse(&self, bytes: &[u8]) -> Option<String> {
        if bytes.len() > self.max_bytes {
            return Some(format!(
                "is {} MiB, more than the {} MiB a plugin may be ([plugins] max_component_mib)",
                bytes.len() >> 20,
                self.max_bytes >> 20
            ));
        }
        let mut functions: u64 = 0;
        for payload in wasmparser::Parser::new(0).parse_all(bytes) {
            match payload {
                Ok(wasmparser::Payload::CodeSectionStart { count, .. }) => {
                    functions += u64::from(count);
                    if functions > self.max_functions {
                        return Some(format!(
                            "has more than {} functions to compile ([plugins] max_functions)",
                            self.max_functions
                        ));
                    }
                }
                Ok(_) => {}
                // What cannot be read here is not compiled either (wasmtime reads components
                // with this same wasmparser).
                Err(e) => return Some(format!("is not a valid WebAssembly component: {e}")),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A core module of `n` empty functions, wrapped in a component.
    fn component_with_functions(n: u32) -> Vec<u8> {
        use wasm_encoder::*;
        let mut module = Module::new();
        let mut types = TypeSection::new();
        types.ty().function([], []);
        module.section(&types);
        let mut functions = FunctionSection::new();
        for _ in 0..n {
            functions.function(0);
        }
        module.section(&functions);
        let mut code = CodeSection::new();
        for _ in 0..n {
            let mut body = Function::new([]);
            body.instruction(&Instruction::End);
            code.function(&body);
        }
        module.section(&code);
        let mut component = Component::new();
        component.section(&ModuleSection(&module));
        component.finish()
    }

    #[test]
    fn a_component_past_the_function_bound_is_refused_before_compiling() {
        let bounds = CompileBounds {
            max_bytes: DEFAULT_MAX_BYTES,
            max_functions: 1_000,
        };
        assert_eq!(bounds.refuse(&component_with_functions(1_000)), None);
        let why = bounds.refuse(&component_with_functions(1_001)).unwrap();
        assert!(why.contains("more than 1000 functions"), "{why}");
        let small = CompileBounds {
            max_bytes: 1024,
            max_functions: 1_000,
        };
        assert!(small.refuse(&vec![0; 2048]).unwrap().contains("MiB"));
    }
}
