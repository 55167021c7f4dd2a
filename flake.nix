{
  description = "llorchd: serve and orchestrate LLM inference on GGUF models, from one workstation to a GPU fleet";

  # A release branch: fleets want a nixpkgs that only takes fixes. It needs
  # rustc >= 1.89 (Cargo.toml rust-version); nixos-25.11 has that.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs =
    { self, nixpkgs }:
    let
      # The binary is built and tested for x86_64 Linux only (static glibc,
      # AVX2/AVX-512 kernels with a scalar fallback).
      system = "x86_64-linux";
      pkgs = nixpkgs.legacyPackages.${system};
      llorchd = pkgs.callPackage ./nix/package.nix { };
      llorchd-home = pkgs.writeShellApplication {
        name = "llorchd-home";
        runtimeInputs = [
          llorchd
          pkgs.coreutils
          pkgs.gnused
        ];
        text = builtins.readFile ./nix/llorchd-home.sh;
      };
    in
    {
      packages.${system} = {
        default = llorchd;
        inherit llorchd llorchd-home;
      };

      # `nix run`: a home profile, config and store under $XDG_DATA_HOME.
      apps.${system}.default = {
        type = "app";
        program = "${llorchd-home}/bin/llorchd-home";
        meta.description = "Run a llorchd home profile (llorchd-home [--dry-run] [MODEL.gguf])";
      };

      nixosModules.default = import ./nixos-module;
      nixosModules.llorchd = self.nixosModules.default;

      overlays.default = final: _prev: {
        llorchd = final.callPackage ./nix/package.nix { };
      };

      # cargo/rustc from nixpkgs, plus what ci/test.sh uses.
      devShells.${system}.default = pkgs.mkShell {
        inputsFrom = [ llorchd ];
        packages = [
          pkgs.clippy
          pkgs.rustfmt
          pkgs.rust-analyzer
          pkgs.cargo-nextest
          pkgs.prometheus # promtool
          pkgs.jq
          pkgs.shellcheck
          pkgs.nix
        ];
      };

      checks.${system} = {
        package = llorchd;
      }
      // import ./nixos-module/test.nix {
        inherit pkgs;
        module = self.nixosModules.default;
        package = llorchd;
      };
    };
}
