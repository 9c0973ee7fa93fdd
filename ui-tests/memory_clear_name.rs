use parjob::Memory;

fn main() {
    let memory = Memory::new("target/ui-cache");
    // Meant: delete the entries of `features`.
    memory.clear("features");
}
