fn main() {
    let p = std::env::args().nth(1).unwrap();
    let b = std::fs::read(&p).unwrap();
    let g = llorchd::gguf::Gguf::parse(&b).unwrap();
    for (k, v) in &g.metadata { println!("{k} = {}", v.summary()); }
    for t in g.tensors.iter().take(40) { println!("{} {:?} {}", t.name, t.dims, t.ty); }
    println!("{:?} params={}", g.tensor_type_counts(), g.parameter_count());
}
