use parjob::sync::Value;

fn main() {
    let _greeting = Value::new(String::from("hello"));
}
