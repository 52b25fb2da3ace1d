//! A well-formed component that implements some other world (a greeter), not `collector`.

wit_bindgen::generate!({
    inline: "
        package test:greeter;
        world greeter {
            export greet: func(name: string) -> string;
        }
    ",
});

struct Greeter;

impl Guest for Greeter {
    fn greet(name: String) -> String {
        format!("hello {name}")
    }
}

export!(Greeter);
