# The llorchd service as a pure function of the values of the
# `services.llorchd` options: the TOML settings and config file, the
# model-staging script, and the service in the shape of NixOS's
# `systemd.services.<name>`. default.nix calls it with nixpkgs' `lib` and
# `pkgs`; eval-unit.nix calls it with the builtins-only stand-ins of
# stubs.nix, so the unit that tests check is the unit NixOS deploys.
#
# Uses only these `lib` functions (stubs.nix mirrors each): getExe,
# isDerivation, filterAttrs, mapAttrsToList, optional, optionals,
# optionalAttrs, hasPrefix, escapeShellArg, concatMapStringsSep, unique.
# And these `pkgs` attributes: formats.toml, runCommand, writeShellScript, jq.
{ lib, pkgs }:

cfg:

let
  unitName = "llorchd.service";
  # Where systemd puts LoadCredential= files ($CREDENTIALS_DIRECTORY).
  credentialsDir = "/run/credentials/${unitName}";
  stateDir = "/var/lib/llorchd";
  tokenCredential = "llorch-api-token";

  exe = lib.getExe cfg.package;
  s = cfg.settings;

  # Drops nulls (TOML has none), and the empty tables and lists they leave,
  # also inside arrays of tables ([[pools]]). No llorchd key has an empty
  # table or list that differs from its default.
  clean =
    v:
    if builtins.isAttrs v && !(lib.isDerivation v) then
      lib.filterAttrs (_: x: x != null && x != { } && x != [ ]) (builtins.mapAttrs (_: clean) v)
    else if builtins.isList v then
      map clean v
    else
      v;

  # "127.0.0.1:8080" / "[::1]:8080" -> 8080; null when there is no port.
  portOf =
    addr:
    let
      m = builtins.match ".*:([0-9]+)" addr;
    in
    if m == null then null else builtins.fromJSON (builtins.head m);
  isLoopback = addr: lib.hasPrefix "127." addr || lib.hasPrefix "[::1]:" addr;
  hostPort =
    host: port:
    if builtins.match ".*:.*" host != null then
      "[${host}]:${toString port}"
    else
      "${host}:${toString port}";

  bind = s.server.bind;
  apiPort = portOf bind;
  metricsBind =
    if cfg.metricsPort == null then
      s.server.metrics_bind
    else
      hostPort cfg.metricsAddress cfg.metricsPort;
  metricsPort = if metricsBind == null then null else portOf metricsBind;

  # TLS files reach the service as credentials: systemd reads them as root
  # and hands the service a private copy, so a root-only key works under
  # DynamicUser without giving the service user any file permissions.
  tlsFiles = lib.filterAttrs (_: p: p != null) {
    inherit (s.tls) cert key ca;
  };
  tlsCredential = name: "tls-${name}";
  credentials =
    lib.optional (cfg.apiTokenFile != null) "${tokenCredential}:${cfg.apiTokenFile}"
    # Interpolation, not toString: a path literal (a public certificate) is
    # copied into the store and so reaches a remote host.
    ++ lib.mapAttrsToList (n: p: "${tlsCredential n}:${p}") tlsFiles;

  settings = clean (
    s
    // {
      inherit (cfg) profile role;
      server = s.server // {
        metrics_bind = metricsBind;
      };
      tls = s.tls // builtins.mapAttrs (n: _: "${credentialsDir}/${tlsCredential n}") tlsFiles;
    }
  );

  settingsFormat = pkgs.formats.toml { };
  rawConfigFile = settingsFormat.generate "llorchd.toml" settings;
  # `llorchd check-config` at build time: a config llorchd would reject
  # fails `nixos-rebuild`, not the boot. It sees the service's environment,
  # since env overrides count (docs/CONFIGURATION.md).
  checkScript = ''
    ${exe} check-config ${rawConfigFile}
    ln -s ${rawConfigFile} "$out"
  '';
  configFile =
    if cfg.checkConfig then
      pkgs.runCommand "llorchd-checked.toml" (cfg.environment // { preferLocalBuild = true; }) checkScript
    else
      rawConfigFile;

  # Runs as ExecStartPre, before the server opens the store (redb allows one
  # process at a time). Idempotent: a model already staged under its id with
  # the declared sha256 is left alone, without re-hashing. The same id with
  # another digest stops the start: replacing it silently would change what
  # clients of that id get.
  stageScript = pkgs.writeShellScript "llorchd-stage-models" ''
    set -euo pipefail
    llorchd() { ${lib.escapeShellArg exe} --config ${lib.escapeShellArg "${configFile}"} "$@"; }
    staged=$(llorchd models list --json)
    stage() {
      local id=$1 file=$2 want=''${3,,} have
      have=$(${lib.getExe pkgs.jq} -r --arg id "$id" '.[] | select(.id == $id) | .sha256' <<<"$staged")
      if [ -n "$have" ]; then
        if [ -n "$want" ] && [ "$have" != "$want" ]; then
          echo "llorchd: model $id is staged with sha256 $have but services.llorchd.models declares $want;" \
            "remove it (llorchd models remove $id, service stopped) or declare the new file under another id" >&2
          return 1
        fi
        echo "llorchd: model $id already staged (sha256 $have)"
        return 0
      fi
      if [ ! -r "$file" ]; then
        echo "llorchd: model $id: cannot read $file (it must exist and be readable by the service)" >&2
        return 1
      fi
      llorchd models stage "$file" --id "$id" ''${want:+--sha256 "$want"}
    }
    ${lib.concatMapStringsSep "\n" (
      m:
      "stage ${lib.escapeShellArg m.id} ${lib.escapeShellArg "${m.file}"} ${
        lib.escapeShellArg (if m.sha256 == null then "" else m.sha256)
      }"
    ) cfg.models}
  '';

  graceSecs = (s.server.shutdown_grace_ms + 999) / 1000;
  lowPorts = builtins.filter (p: p != null && p < 1024) [
    apiPort
    metricsPort
  ];
  # A home box on loopback needs no network; anything else binds or dials
  # addresses that exist only once the network is up.
  needsNetwork = cfg.profile != "home" || !(isLoopback bind);
  what =
    if cfg.profile == "home" then
      "home profile"
    else if cfg.role == "control" then
      "cloud control plane"
    else
      "cloud worker";

  serviceConfig = {
    Type = "notify";
    # Only the server itself may report READY=1/WATCHDOG=1, not the staging
    # script or anything it starts.
    NotifyAccess = "main";
    ExecStart = "${exe} serve --config ${configFile}";
    Restart = "on-failure";
    RestartSec = "5s";
    # Covers model staging (a copy and a hash of each new file) and loading.
    TimeoutStartSec = "${toString cfg.startTimeoutSec}s";
    # Above the server's own drain (server.shutdown_grace_ms), so systemd
    # does not SIGKILL a worker that is still draining and deregistering.
    TimeoutStopSec = "${toString (graceSecs + 15)}s";

    DynamicUser = true;
    StateDirectory = "llorchd";
    StateDirectoryMode = "0700";
    UMask = "0077";
    SyslogIdentifier = "llorchd";
    # Many concurrent clients, each an SSE stream.
    LimitNOFILE = 65536;

    CapabilityBoundingSet = if lowPorts == [ ] then "" else "CAP_NET_BIND_SERVICE";
    NoNewPrivileges = true;
    # A capability held in a private user namespace does not open ports
    # below 1024 on the host, so that namespace only comes without them.
    PrivateUsers = lowPorts == [ ];
    ProtectSystem = "strict";
    ProtectHome = true;
    PrivateTmp = true;
    PrivateDevices = true;
    PrivateMounts = true;
    DevicePolicy = "closed";
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectClock = true;
    ProtectHostname = true;
    ProtectProc = "invisible";
    RestrictAddressFamilies = "AF_INET AF_INET6 AF_UNIX";
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    LockPersonality = true;
    MemoryDenyWriteExecute = true;
    RemoveIPC = true;
    SystemCallArchitectures = "native";
    SystemCallFilter = [
      "@system-service"
      "~@privileged"
    ];
    # A refused system call fails with EPERM and gets logged by the caller,
    # instead of killing the process without a word.
    SystemCallErrorNumber = "EPERM";
  }
  // lib.optionalAttrs (lowPorts != [ ]) {
    AmbientCapabilities = "CAP_NET_BIND_SERVICE";
  }
  // lib.optionalAttrs (cfg.watchdogSec != null) {
    WatchdogSec = "${toString cfg.watchdogSec}s";
  }
  // lib.optionalAttrs (cfg.models != [ ]) {
    ExecStartPre = "${stageScript}";
  }
  // lib.optionalAttrs (credentials != [ ]) {
    LoadCredential = credentials;
  }
  // lib.optionalAttrs (s.store.dir != stateDir) {
    ReadWritePaths = [ s.store.dir ];
  };

  ids = map (m: m.id) cfg.models;
  inStore = p: lib.hasPrefix "/nix/store/" (toString p);
in
{
  inherit
    settings
    rawConfigFile
    configFile
    checkScript
    stageScript
    ;

  service = {
    description = "llorchd LLM inference (${what})";
    wantedBy = [ "multi-user.target" ];
    after = if needsNetwork then [ "network-online.target" ] else [ "network.target" ];
    wants = lib.optional needsNetwork "network-online.target";
    inherit (cfg) environment;
    unitConfig = {
      # Restart=on-failure, but stop retrying a service that cannot start.
      StartLimitIntervalSec = 300;
      StartLimitBurst = 5;
    };
    inherit serviceConfig;
  };

  firewallPorts =
    lib.optional (apiPort != null && !(isLoopback bind)) apiPort
    ++ lib.optional (metricsPort != null && !(isLoopback metricsBind)) metricsPort;

  assertions = [
    {
      assertion = cfg.profile == "cloud" -> cfg.role != null;
      message = "services.llorchd: the cloud profile needs services.llorchd.role = \"control\" or \"worker\".";
    }
    {
      assertion = cfg.profile == "home" -> cfg.role == null;
      message = "services.llorchd: only the cloud profile has a role; remove services.llorchd.role or set profile = \"cloud\".";
    }
    {
      assertion = cfg.role == "worker" -> s.cloud.node_id != null && s.cloud.control_urls != [ ];
      message = "services.llorchd: a cloud worker needs settings.cloud.node_id and at least one settings.cloud.control_urls entry.";
    }
    {
      assertion = cfg.role == "control" -> s.pools == [ ] && cfg.models == [ ];
      message = "services.llorchd: a control plane loads no model; put settings.pools and models on the workers.";
    }
    {
      assertion = cfg.profile == "cloud" -> cfg.apiTokenFile != null || s.auth.token_file != null;
      message = "services.llorchd: the cloud profile needs a bearer token between nodes: set services.llorchd.apiTokenFile.";
    }
    {
      assertion = cfg.apiTokenFile != null -> !(inStore cfg.apiTokenFile);
      message = "services.llorchd.apiTokenFile is in the Nix store, which every user can read; point it at a file outside the store (e.g. /run/keys/llorch-api-token).";
    }
    {
      assertion = s.tls.key != null -> !(inStore s.tls.key);
      message = "services.llorchd.settings.tls.key is in the Nix store, which every user can read; point it at a file outside the store.";
    }
    {
      assertion = (s.tls.cert == null) == (s.tls.key == null);
      message = "services.llorchd.settings.tls: set both cert and key, or neither.";
    }
    {
      assertion = !(cfg.metricsPort != null && s.server.metrics_bind != null);
      message = "services.llorchd: set metricsPort (with metricsAddress) or settings.server.metrics_bind, not both.";
    }
    {
      assertion = !(s ? profile || s ? role);
      message = "services.llorchd: set the profile and role with services.llorchd.profile and services.llorchd.role, not inside settings.";
    }
    {
      assertion = builtins.length (lib.unique ids) == builtins.length ids;
      message = "services.llorchd.models: each id may appear once.";
    }
  ];

  warnings =
    lib.optional (cfg.profile == "cloud" && isLoopback bind)
      "services.llorchd: a cloud ${if cfg.role == null then "node" else cfg.role} bound to ${bind} cannot be reached from other hosts; set settings.server.bind."
    ++ lib.optional (cfg.openFirewall && cfg.profile == "home" && isLoopback bind && metricsPort == null)
      "services.llorchd.openFirewall has no effect: the API is bound to loopback (${bind}).";
}
