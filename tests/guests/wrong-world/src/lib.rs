//! A component of some other world than `arbiter:policy/policy`.

wit_bindgen::generate!({
    inline: "
        package test:wrong;
        world greeter {
            export greet: func(name: string) -> string;
        }
    ",
});

struct Greeter;

impl Guest for Greeter {
    fn greet(name: String) -> String {
        format!("hello, {name}")
    }
}

export!(Greeter);
