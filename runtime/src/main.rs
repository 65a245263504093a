fn main() {
    std::process::exit(rcrun::cli::main());
}
