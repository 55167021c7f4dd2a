fn main() {
    println!("llorchd {}", env!("CARGO_PKG_VERSION"));
}
