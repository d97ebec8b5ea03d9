fn main() {
    eprintln!("pen: not built yet");
    std::process::exit(1);
}
