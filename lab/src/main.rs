fn main() {
    eprintln!("pen-lab: not built yet");
    std::process::exit(1);
}
