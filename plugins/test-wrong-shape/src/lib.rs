//! A hostile test plugin: it exports the contract's policy interface by name, with its
//! functions' names but other types. It compiles, and its kind is read from the export name; only instantiating
//! it against the contract shows it cannot serve. Loading it must never replace a working
//! version.

wit_bindgen::generate!({
    inline: r#"
        package sluice:plugin@0.1.0;

        interface policy {
            open: func(session: string) -> bool;
            evaluate: func(statement: string) -> bool;
        }

        world wrong-shape {
            export policy;
        }
    "#,
});

struct WrongShape;

impl exports::sluice::plugin::policy::Guest for WrongShape {
    fn open(_session: String) -> bool {
        true
    }

    fn evaluate(_statement: String) -> bool {
        true
    }
}

export!(WrongShape);
