# Builtins-only harness for the module, for machines without nixpkgs:
#
#   nix-instantiate --eval --strict --json nixos-module/eval-unit.nix \
#     --argstr dir /tmp/x --argstr llorchdPrefix /tmp/x/pkg \
#     --argstr modelFile /tmp/x/tiny.gguf --argstr modelSha256 HEX
#
# For each scenario (a home box, a cloud worker, a cloud control plane, and
# configurations the module must refuse) it takes option values, resolves
# them against the declarations in default.nix (defaults, types,
# submodules), evaluates default.nix's `config` with the stand-ins of
# stubs.nix, and renders the systemd unit the way NixOS does
# (nixos/lib/systemd-lib.nix: attrsToSection, serviceToUnit; NixOS adds
# PATH, LOCALE_ARCHIVE and TZDIR to Environment=, left out here). It returns the
# unit text, the TOML config, the files the unit refers to, and failed
# assertions. tests/nix_module.rs writes them out and runs systemd-analyze
# and `llorchd check-config` on them.
{
  dir,
  llorchdPrefix,
  modelFile ? "${dir}/tiny.gguf",
  modelSha256 ? null,
  jqPrefix ? "/usr",
}:

let
  inherit (builtins)
    attrNames
    concatLists
    concatStringsSep
    elemAt
    filter
    fromTOML
    genList
    head
    isAttrs
    isBool
    isInt
    isList
    isString
    length
    mapAttrs
    toJSON
    typeOf
    ;
  tools = import ./stubs.nix { inherit dir llorchdPrefix jqPrefix; };
  inherit (tools) lib;

  isOption = v: isAttrs v && (v._type or null) == "option";
  shown = v: if isString v || isInt v || isBool v then toJSON v else "a ${typeOf v}";

  # The value of each declared option: the given one, else the default,
  # checked against its type; submodules recurse, and freeform ones keep
  # undeclared keys.
  evalOptions =
    decls: values: path: freeform:
    let
      unknown = filter (n: !(decls ? ${n})) (attrNames values);
      declared = mapAttrs (
        n: d:
        if isOption d then
          optionValue d values n "${path}.${n}"
        else
          evalOptions d (values.${n} or { }) "${path}.${n}" false
      ) decls;
    in
    if unknown != [ ] && !freeform then
      throw "${path}.${head unknown}: no such option"
    else
      removeAttrs values (attrNames decls) // declared;
  optionValue =
    d: values: n: path:
    if values ? ${n} then
      typed d.type values.${n} path
    else if d ? default then
      typed d.type d.default path
    else
      throw "${path} is used but has no value and no default";
  typed =
    t: v: path:
    if !(t.check v) then
      throw "${path}: ${shown v} is not a ${t.description}"
    else if t.name == "submodule" then
      evalOptions t.options v path (t.freeformType != null)
    else if t.name == "nullOr" then
      (if v == null then null else typed t.elemType v path)
    else if t.name == "listOf" then
      genList (i: typed t.elemType (elemAt v i) "${path}[${toString i}]") (length v)
    else if t.name == "attrsOf" then
      mapAttrs (k: x: typed t.elemType x "${path}.${k}") v
    else
      v;

  # Every option path under services.llorchd, `*` for list elements.
  optionPaths =
    decls: path:
    concatLists (
      lib.mapAttrsToList (
        n: d:
        if isOption d then [ "${path}${n}" ] ++ subOptions d.type "${path}${n}" else optionPaths d "${path}${n}."
      ) decls
    );
  subOptions =
    t: path:
    if t.name == "submodule" then
      optionPaths t.options "${path}."
    else if t.name == "listOf" then
      subOptions t.elemType "${path}.*"
    else if t.name == "nullOr" then
      subOptions t.elemType path
    else
      [ ];

  # The module system's mkIf, for the definitions default.nix makes.
  resolve =
    v:
    if isAttrs v && (v._type or null) == "if" then
      (if v.condition then resolve v.content else null)
    else if isAttrs v && !(v ? outPath) then
      lib.filterAttrs (_: x: x != null) (mapAttrs (_: resolve) v)
    else
      v;

  # nixos/lib/systemd-lib.nix, for a service.
  toOption =
    x:
    if x == true then
      "true"
    else if x == false then
      "false"
    else
      toString x;
  attrsToSection =
    as:
    concatStringsSep "" (
      concatLists (
        lib.mapAttrsToList (name: value: map (x: "${name}=${toOption x}\n") (if isList value then value else [ value ])) as
      )
    );
  unitText =
    def:
    let
      unitConfig =
        lib.optionalAttrs (def.wants != [ ]) { Wants = toString def.wants; }
        // lib.optionalAttrs (def.after != [ ]) { After = toString def.after; }
        // {
          Description = def.description;
        }
        // def.unitConfig;
    in
    "[Unit]\n"
    + attrsToSection unitConfig
    + "\n[Service]\n"
    + concatStringsSep "" (lib.mapAttrsToList (n: v: "Environment=${toJSON "${n}=${v}"}\n") def.environment)
    + attrsToSection def.serviceConfig
    + "\n[Install]\nWantedBy=${concatStringsSep " " def.wantedBy}\n";

  scenario =
    name:
    {
      hostName,
      values,
    }:
    let
      st = import ./stubs.nix {
        dir = "${dir}/${name}";
        inherit llorchdPrefix jqPrefix;
      };
      nixosConfig = {
        services.llorchd = cfg;
        networking.hostName = hostName;
      };
      module = import ./default.nix {
        config = nixosConfig;
        inherit (st) lib pkgs;
      };
      cfg = evalOptions module.options.services.llorchd values "services.llorchd" false;
      out = resolve module.config;
      r = import ./render.nix { inherit (st) lib pkgs; } cfg;
      svc = out.systemd.services.llorchd;
      file = f: {
        path = "${f}";
        inherit (f) text;
        executable = f.executable or false;
      };
    in
    {
      failedAssertions = map (a: a.message) (filter (a: !a.assertion) out.assertions);
      inherit (out) warnings;
      render = {
        unit = unitText svc;
        config = r.rawConfigFile.text;
        inherit (r) settings;
        # The TOML writer against builtins.fromTOML.
        configRoundTrips = fromTOML r.rawConfigFile.text == r.settings;
        # default.nix passes render.nix's service through untouched.
        moduleUsesRender = svc == r.service;
        etcConfig = "${out.environment.etc."llorchd/llorchd.toml".source}";
        firewall = out.networking.firewall.allowedTCPPorts or [ ];
        files =
          [ (file r.rawConfigFile) ]
          ++ lib.optional cfg.checkConfig (file (r.configFile // { inherit (r.rawConfigFile) text; }))
          ++ lib.optional (cfg.models != [ ]) (file r.stageScript);
        checkScript = if cfg.checkConfig then r.checkScript else null;
        checkEnv = if cfg.checkConfig then removeAttrs r.configFile.env [ "preferLocalBuild" ] else null;
      };
    };

  tinyModel = {
    id = "tiny";
    file = modelFile;
    sha256 = modelSha256;
  };
  token = "/run/keys/llorch-api-token";
  tlsDir = "/var/lib/llorch-tls";

  valid = {
    home = {
      hostName = "homebox";
      values = {
        enable = true;
        settings.pools = [
          {
            model = "tiny";
            slots = 2;
          }
        ];
        models = [ tinyModel ];
        metricsPort = 9464;
        metricsAddress = "127.0.0.1";
      };
    };
    worker = {
      hostName = "gpu-1";
      values = {
        enable = true;
        profile = "cloud";
        role = "worker";
        apiTokenFile = token;
        openFirewall = true;
        metricsPort = 9464;
        environment.RUST_BACKTRACE = "1";
        models = [ tinyModel ];
        settings = {
          server.bind = "0.0.0.0:8081";
          cloud = {
            control_urls = [
              "https://control-a.internal:8443"
              "https://control-b.internal:8443"
            ];
            advertise_url = "https://gpu-1.internal:8081";
            heartbeat_interval_secs = 10;
          };
          tls = {
            cert = "${tlsDir}/gpu-1.crt";
            key = "${tlsDir}/gpu-1.key";
            ca = "${tlsDir}/ca.crt";
          };
          pools = [
            {
              id = "smol";
              model = "tiny";
              slots = 8;
              device = "cpu";
            }
          ];
          engine.threads = 4;
          logging.level = "info";
        };
      };
    };
    control = {
      hostName = "control-a";
      values = {
        enable = true;
        profile = "cloud";
        role = "control";
        apiTokenFile = token;
        openFirewall = true;
        watchdogSec = null;
        settings = {
          server = {
            bind = "[::]:443";
            shutdown_grace_ms = 30000;
          };
          cloud.node_timeout_ms = 30000;
          admission = {
            queue_capacity = 1024;
            full_policy = "drop-lru";
          };
          tls = {
            cert = "${tlsDir}/control-a.crt";
            key = "${tlsDir}/control-a.key";
            ca = "${tlsDir}/ca.crt";
            require_client_cert = true;
          };
        };
      };
    };
  };

  invalid = {
    cloud-without-role = {
      hostName = "x";
      values = {
        enable = true;
        profile = "cloud";
        apiTokenFile = "/nix/store/00000000000000000000000000000000-token";
        settings.pools = [ { model = "tiny"; } ];
      };
    };
    worker-incomplete = {
      hostName = "gpu-2";
      values = {
        enable = true;
        profile = "cloud";
        role = "worker";
        metricsPort = 9464;
        settings.server.metrics_bind = "0.0.0.0:9465";
        settings.tls.cert = "${tlsDir}/gpu-2.crt";
        models = [
          tinyModel
          tinyModel
        ];
      };
    };
  };

  # The flake's outputs, with nixpkgs replaced by the stand-ins.
  flake = import ../flake.nix;
  flakeOutputs =
    let
      st = import ./stubs.nix {
        dir = "${dir}/flake";
        inherit llorchdPrefix jqPrefix;
      };
      self = flake.outputs {
        inherit self;
        nixpkgs.legacyPackages.x86_64-linux = st.pkgs;
      };
    in
    self;
  out = system: flakeOutputs.${system}.x86_64-linux;
  pkgArgs = (out "packages").default.args;
  homeApp = (out "packages").llorchd-home.args;
  vmTests = removeAttrs (out "checks") [ "package" ];
  # The VM tests' nodes, through the module as the scenarios above.
  vmNodes = builtins.listToAttrs (
    concatLists (
      lib.mapAttrsToList (
        test: t:
        lib.mapAttrsToList (node: n: {
          name = "${test}-${node}";
          value = scenario "${test}-${node}" {
            hostName = node;
            values = n.services.llorchd;
          };
        }) t.nodes
      ) vmTests
    )
  );

  probe = import ./default.nix {
    config = {
      services.llorchd = { };
      networking.hostName = "x";
    };
    inherit (tools) lib pkgs;
  };
in
{
  scenarios = mapAttrs scenario valid;
  refused = mapAttrs (n: s: { inherit (scenario n s) failedAssertions; }) invalid;
  options = optionPaths probe.options.services.llorchd "";
  flake = {
    nixpkgsUrl = flake.inputs.nixpkgs.url;
    packages = attrNames (out "packages");
    devShells = attrNames (out "devShells");
    checks = attrNames (out "checks");
    app = (out "apps").default;
    moduleIsAFunction = builtins.isFunction flakeOutputs.nixosModules.default;
    package = {
      inherit (pkgArgs) pname version cargoTestFlags;
      cargoLock = toString pkgArgs.cargoLock.lockFile;
      rustflags = pkgArgs.env.RUSTFLAGS;
      mainProgram = pkgArgs.meta.mainProgram;
      srcRoot = toString pkgArgs.src.root;
      srcMissing = map toString (filter (p: p != null && !(builtins.pathExists p)) pkgArgs.src.fileset);
    };
    homeApp = {
      inherit (homeApp) name text;
      runtimeInputs = map (p: p.name) homeApp.runtimeInputs;
    };
    testScripts = mapAttrs (_: t: t.testScript) vmTests;
    vmNodes = mapAttrs (_: s: {
      inherit (s) failedAssertions warnings;
      inherit (s.render)
        config
        files
        unit
        checkScript
        checkEnv
        ;
    }) vmNodes;
  };
}
