# NixOS module: services.llorchd. This file holds the options and wires the
# result of render.nix (the settings, the config file and the systemd
# service, a pure function of the options) into the system. See
# docs/NIXOS.md.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.llorchd;
  inherit (lib) mkOption types literalExpression;
  settingsFormat = pkgs.formats.toml { };
  rendered = import ./render.nix { inherit lib pkgs; } cfg;

  # Catalog, pool and node ids (src/config.rs `validate_id`).
  idType = types.strMatching "[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}";

  # One TOML table: typed options for the keys operators set most; any
  # other key of docs/CONFIGURATION.md passes through as written (llorchd
  # rejects unknown keys, and checkConfig catches that at build time).
  table =
    description: options:
    mkOption {
      type = types.submodule {
        freeformType = settingsFormat.type;
        inherit options;
      };
      default = { };
      inherit description;
    };
  unset =
    type: description:
    mkOption {
      type = types.nullOr type;
      default = null;
      description = "${description} Unset: llorchd's default.";
    };
in
{
  options.services.llorchd = {
    enable = lib.mkEnableOption "llorchd, an LLM inference server and orchestrator for GGUF models";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ../nix/package.nix { };
      defaultText = lib.literalMD "this repository's build (`nix/package.nix`)";
      description = "The llorchd package.";
    };

    profile = mkOption {
      type = types.enum [
        "home"
        "cloud"
      ];
      default = "home";
      description = ''
        `home`: API, admission, pools and the engine in one process.
        `cloud`: a control plane or a GPU worker (see `role`).
      '';
    };

    role = mkOption {
      type = types.nullOr (
        types.enum [
          "control"
          "worker"
        ]
      );
      default = null;
      description = "Cloud profile only: `control` (API, placement, node registry; loads no model) or `worker` (pools and engine).";
    };

    settings = mkOption {
      default = { };
      description = ''
        llorchd's TOML config (docs/CONFIGURATION.md), rendered with
        `pkgs.formats.toml`. Keys without a typed option below can be set
        as well. `profile` and `role` come from the options of the same
        name. Unset (null) keys are left out, so llorchd's defaults apply.
      '';
      type = types.submodule {
        freeformType = settingsFormat.type;
        options = {
          server = table "`[server]`: where the API listens, and shutdown." {
            bind = mkOption {
              type = types.str;
              default = "127.0.0.1:8080";
              example = "0.0.0.0:8080";
              description = "Client API address (on a worker, also its dispatch endpoint): `IP:PORT`, `[IPv6]:PORT`.";
            };
            metrics_bind = unset types.str "Also serve /metrics here, without a token. Prefer `metricsPort`.";
            shutdown_grace_ms = mkOption {
              type = types.ints.unsigned;
              default = 10000;
              description = "How long a graceful shutdown waits for in-flight work. The unit's TimeoutStopSec is this plus 15 s.";
            };
            max_body_bytes = unset types.ints.positive "Largest request body.";
          };

          store = table "`[store]`: the model store." {
            dir = mkOption {
              type = types.str;
              default = "/var/lib/llorchd";
              description = ''
                Model files and the redb database. The default is the unit's
                StateDirectory. Another directory is added to ReadWritePaths,
                and must be writable by the service's dynamic user; mounting
                a models disk at /var/lib/private/llorchd is simpler.
              '';
            };
          };

          pools = mkOption {
            default = [ ];
            description = "`[[pools]]`: home profile and workers only.";
            example = literalExpression ''[ { id = "default"; model = "smollm2"; slots = 4; } ]'';
            type = types.listOf (
              types.submodule {
                freeformType = settingsFormat.type;
                options = {
                  id = mkOption {
                    type = idType;
                    default = "default";
                    description = "Pool id.";
                  };
                  model = mkOption {
                    type = idType;
                    description = "Catalog id of the model the pool serves (see `models`).";
                  };
                  slots = unset (types.ints.between 1 256) "Sequences decoded together.";
                  ctx = unset types.ints.unsigned "Context length per slot; 0 is the model's own, capped at 4096.";
                  threads = unset types.ints.unsigned "Engine threads for this pool.";
                  device = unset types.str "`cpu`, or `cuda:N` in a CUDA build.";
                };
              }
            );
          };

          admission = table "`[admission]`: the bounded queue in front of each pool." {
            queue_capacity = unset types.ints.positive "Queue length per pool.";
            full_policy = unset (types.enum [
              "reject"
              "drop-lru"
            ]) "What a full queue does with one more task.";
            tokens_per_second = unset types.ints.unsigned "Per-pool token budget per second; 0 is off.";
            token_burst = unset types.ints.unsigned "Burst allowance of that budget.";
            task_retention_secs = unset types.ints.unsigned "How long an ended task's status and events stay readable.";
            max_retained_tasks = unset types.ints.positive "Ended tasks kept readable at most.";
          };

          sessions = table "`[sessions]`." {
            ttl_secs = unset types.ints.unsigned "Idle time after which a session is forgotten.";
            max_turns = unset types.ints.positive "Turns per session.";
            max_sessions = unset types.ints.positive "Sessions kept at most (least recently used go first).";
          };

          engine = table "`[engine]`." {
            threads = unset types.ints.unsigned "Default engine threads; 0 is the cores available.";
          };

          cloud = table "`[cloud]`: registration, heartbeats and the node timeout." {
            node_id = mkOption {
              type = types.nullOr idType;
              default = if cfg.role == "worker" then config.networking.hostName else null;
              defaultText = literalExpression ''if role == "worker" then config.networking.hostName else null'';
              description = "Worker: this node's id.";
            };
            control_urls = mkOption {
              type = types.listOf types.str;
              default = [ ];
              example = [ "https://control.example.org:8443" ];
              description = "Worker: the control planes to register and heartbeat with; each is an independent replica.";
            };
            advertise_url = unset types.str "Worker: the URL control planes use to reach it.";
            heartbeat_interval_secs = unset types.ints.positive "Worker: heartbeat period.";
            node_timeout_ms = unset types.ints.positive "Control: a node with no heartbeat for this long is offline.";
          };

          auth = table "`[auth]`. The token itself comes from `apiTokenFile`." {
            token_file = unset types.str "File holding the bearer token; `apiTokenFile` is the way to set one under DynamicUser.";
            require_on_loopback = unset types.bool "Require the token on the client API even on loopback.";
          };

          tls = table "`[tls]`. The files are passed as systemd credentials (LoadCredential), so root-only files work; the rendered TOML points at /run/credentials/llorchd.service/tls-{cert,key,ca}." {
            cert = unset types.path "PEM certificate chain.";
            key = unset types.str "PEM private key (a path outside the Nix store).";
            ca = unset types.path "PEM CA bundle that verifies peers.";
            require_client_cert = unset types.bool "Control plane: require client certificates signed by `ca` (mTLS).";
          };

          logging = table "`[logging]`. Under systemd, llorchd writes native journald fields." {
            level = unset types.str "An EnvFilter directive, e.g. `info` or `llorchd=debug`.";
            format = unset (types.enum [
              "auto"
              "json"
              "pretty"
              "journald"
            ]) "Log format.";
          };
        };
      };
    };

    apiTokenFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/run/keys/llorch-api-token";
      description = ''
        File holding the bearer token between nodes (and on the client API
        beyond loopback). Passed with `LoadCredential=llorch-api-token:FILE`;
        llorchd reads `$CREDENTIALS_DIRECTORY/llorch-api-token`. Keep it out
        of the Nix store (agenix, sops-nix or a deploy tool's keys).
      '';
    };

    metricsPort = mkOption {
      type = types.nullOr types.port;
      default = null;
      example = 9464;
      description = "Serve Prometheus /metrics on this port as well, without a token (`server.metrics_bind`).";
    };

    metricsAddress = mkOption {
      type = types.str;
      default = "0.0.0.0";
      description = "Address for `metricsPort`.";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the API port and `metricsPort` in the firewall (not for addresses on loopback).";
    };

    models = mkOption {
      default = [ ];
      description = ''
        Models staged into the store before the server starts
        (`llorchd models stage FILE --id ID --sha256 HEX`, in ExecStartPre).
        Idempotent: a model already staged with the declared digest is not
        copied or hashed again; the same id with another digest stops the
        start.
      '';
      example = literalExpression ''
        [
          {
            id = "smollm2";
            file = "/srv/models/SmolLM2-135M-Instruct.Q4_1.gguf";
            sha256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
          }
        ]
      '';
      type = types.listOf (
        types.submodule {
          options = {
            id = mkOption {
              type = idType;
              description = "Catalog id.";
            };
            file = mkOption {
              type = types.path;
              description = ''
                The GGUF file: a path on the host (a string), or a derivation
                such as `pkgs.fetchurl { ... }`. A Nix path literal copies
                the file into the Nix store first.
              '';
            };
            sha256 = mkOption {
              type = types.nullOr (types.strMatching "[0-9a-fA-F]{64}");
              default = null;
              description = "Expected sha256; a mismatch stages nothing and fails the start.";
            };
          };
        }
      );
    };

    watchdogSec = mkOption {
      type = types.nullOr types.ints.positive;
      default = 30;
      description = "systemd watchdog (WatchdogSec); llorchd pings at half of it. null turns it off.";
    };

    startTimeoutSec = mkOption {
      type = types.ints.positive;
      default = 600;
      description = "TimeoutStartSec: staging new models (a copy and a hash each) and loading the pools.";
    };

    environment = mkOption {
      type = types.attrsOf types.str;
      default = { };
      example = {
        RUST_LOG = "llorchd=debug";
      };
      description = "Environment of the service; docs/CONFIGURATION.md lists the overrides llorchd reads.";
    };

    checkConfig = mkOption {
      type = types.bool;
      default = true;
      description = "Run `llorchd check-config` on the rendered TOML at build time.";
    };
  };

  config = lib.mkIf cfg.enable {
    inherit (rendered) assertions warnings;
    systemd.services.llorchd = rendered.service;
    # A stable path for `llorchd --config /etc/llorchd/llorchd.toml ...`.
    environment.etc."llorchd/llorchd.toml".source = rendered.configFile;
    environment.systemPackages = [ cfg.package ];
    networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall rendered.firewallPorts;
  };
}
