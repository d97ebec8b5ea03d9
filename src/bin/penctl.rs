fn main() {
    eprintln!("penctl: not built yet");
    std::process::exit(1);
}
