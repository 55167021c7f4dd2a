# NixOS VM tests, run by `nix flake check` (they need nixpkgs and KVM, so
# ci/test.sh does not run them; tests/nix_module.rs evaluates their node
# configurations with the module and checks the rendered TOML with
# `llorchd check-config`).
#
# nixos-home: one box, a synthetic model staged by the module, the API and
#   /metrics, journald fields, staging that is idempotent across restarts.
# nixos-cloud: one control plane and two workers; registration seen through
#   GET /v2/nodes, 401 without the token, a worker that stops and returns.
{
  pkgs,
  module,
  package,
}:

let
  # A small synthetic llama model, written by llorchd itself.
  tinyModel = pkgs.runCommand "tiny.gguf" { } ''
    ${package}/bin/llorchd models synth --arch llama --layers 2 --dim 128 --heads 4 --kv-heads 2 --ff 256 --vocab 512 --out $out
  '';
  token = "llorch-test-token-5f0c2a9d";
  base = {
    imports = [ module ];
    services.llorchd.package = package;
    environment.systemPackages = [
      pkgs.curl
      pkgs.jq
    ];
    virtualisation.memorySize = 2048;
  };
  # The token as a root-only file outside the store (a copy, not a link).
  tokenFile = {
    environment.etc."llorch-api-token" = {
      text = token;
      mode = "0400";
    };
  };
  worker = name: {
    imports = [
      base
      tokenFile
    ];
    services.llorchd = {
      enable = true;
      profile = "cloud";
      role = "worker";
      apiTokenFile = "/etc/llorch-api-token";
      openFirewall = true;
      models = [
        {
          id = "tiny";
          file = tinyModel;
        }
      ];
      settings = {
        server.bind = "0.0.0.0:8081";
        cloud = {
          control_urls = [ "http://control:8080" ];
          advertise_url = "http://${name}:8081";
          heartbeat_interval_secs = 1;
        };
        pools = [
          {
            model = "tiny";
            slots = 2;
          }
        ];
      };
    };
  };
in
{
  nixos-home = pkgs.testers.runNixOSTest {
    name = "llorchd-home";
    nodes.machine = {
      imports = [ base ];
      services.llorchd = {
        enable = true;
        models = [
          {
            id = "tiny";
            file = tinyModel;
          }
        ];
        settings.pools = [
          {
            model = "tiny";
            slots = 2;
          }
        ];
        metricsPort = 9464;
        metricsAddress = "127.0.0.1";
      };
    };
    testScript = ''
      machine.wait_for_unit("llorchd.service")
      # Type=notify: the unit is active only once llorchd sent READY=1.
      machine.succeed("test $(systemctl show -p Type --value llorchd) = notify")
      machine.succeed("test $(systemctl show -p WatchdogUSec --value llorchd) = 30s")
      machine.wait_until_succeeds("curl -sf http://127.0.0.1:8080/readyz", timeout=60)
      machine.succeed("curl -sf http://127.0.0.1:8080/healthz")
      machine.succeed("curl -sf http://127.0.0.1:9464/metrics | grep -q '^pool_ready'")
      machine.succeed(
          "curl -sf http://127.0.0.1:8080/v1/completions -H 'content-type: application/json'"
          + " -d '{\"model\": \"tiny\", \"prompt\": \"hello\", \"max_tokens\": 4}'"
          + " | jq -e '.choices[0].text | type == \"string\"'"
      )
      # Native journald fields, with llorchd's LLORCH_ prefix.
      machine.succeed(
          "journalctl -u llorchd -o json | jq -se 'map(keys[] | select(startswith(\"LLORCH_\"))) | length > 0'"
      )
      # Staging runs again at every start and leaves the staged model alone.
      machine.succeed("systemctl restart llorchd.service")
      machine.wait_for_unit("llorchd.service")
      machine.succeed("journalctl -u llorchd | grep -q 'model tiny already staged'")
      machine.wait_until_succeeds("curl -sf http://127.0.0.1:8080/readyz", timeout=60)
      # The sandbox holds: no capabilities, a dynamic user.
      machine.succeed("test -z \"$(systemctl show -p CapabilityBoundingSet --value llorchd)\"")
      machine.succeed("test $(systemctl show -p DynamicUser --value llorchd) = yes")
    '';
  };

  nixos-cloud = pkgs.testers.runNixOSTest {
    name = "llorchd-cloud";
    nodes = {
      control = {
        imports = [
          base
          tokenFile
        ];
        services.llorchd = {
          enable = true;
          profile = "cloud";
          role = "control";
          apiTokenFile = "/etc/llorch-api-token";
          openFirewall = true;
          settings = {
            server.bind = "0.0.0.0:8080";
            cloud.node_timeout_ms = 5000;
          };
        };
      };
      worker1 = worker "worker1";
      worker2 = worker "worker2";
    };
    testScript = ''
      import json

      auth = "-H 'Authorization: Bearer ${token}'"

      def online():
          out = control.succeed(f"curl -sf {auth} http://127.0.0.1:8080/v2/nodes")
          return sorted(n["node_id"] for n in json.loads(out)["nodes"] if n["state"] == "online")

      start_all()
      control.wait_for_unit("llorchd.service")
      worker1.wait_for_unit("llorchd.service")
      worker2.wait_for_unit("llorchd.service")

      with subtest("both workers register"):
          retry(lambda _: online() == ["worker1", "worker2"], 60)

      with subtest("no token, no registry"):
          control.succeed(
              "test $(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/v2/nodes) = 401"
          )

      with subtest("the model is available on both workers"):
          control.succeed(f"curl -sf {auth} http://127.0.0.1:8080/v2/catalog/availability | grep -q tiny")

      with subtest("a task placed through the control plane"):
          control.succeed(
              f"curl -sf {auth} http://127.0.0.1:8080/v1/completions -H 'content-type: application/json'"
              + " -d '{\"model\": \"tiny\", \"prompt\": \"hello\", \"max_tokens\": 4}'"
              + " | jq -e '.choices[0].text | type == \"string\"'"
          )

      with subtest("a stopped worker leaves, and comes back"):
          worker2.succeed("systemctl stop llorchd.service")
          retry(lambda _: online() == ["worker1"], 60)
          worker2.succeed("systemctl start llorchd.service")
          worker2.wait_for_unit("llorchd.service")
          retry(lambda _: online() == ["worker1", "worker2"], 60)
    '';
  };
}
