# Builtins-only stand-ins for the parts of nixpkgs' `lib` and `pkgs` that
# default.nix and render.nix use, so that eval-unit.nix can evaluate them
# where nixpkgs cannot be fetched. Each function has the semantics of its
# nixpkgs namesake for the inputs used here. Files that pkgs would build
# (the TOML config, scripts) become { outPath; text; } records: `outPath`
# is where the test writes `text` (under `dir`), and string interpolation
# of a record gives that path, as it gives a store path for a derivation.
{
  # Directory the test writes the files into.
  dir,
  # Stands in for the llorchd package's store path: the test makes
  # `${llorchdPrefix}/bin/llorchd` a link to the binary cargo built.
  llorchdPrefix,
  # Where `bin/jq` is on the test machine.
  jqPrefix ? "/usr",
}:

let
  inherit (builtins)
    all
    attrNames
    concatStringsSep
    elem
    filter
    isAttrs
    isBool
    isFloat
    isInt
    isList
    isPath
    isString
    listToAttrs
    mapAttrs
    match
    replaceStrings
    substring
    toJSON
    typeOf
    ;

  isDerivation = v: isAttrs v && (v.type or null) == "derivation";

  lib = rec {
    inherit isDerivation;

    # Options and types are plain records here: the harness reads `default`,
    # `type.check` and the nesting, not the module system's merge rules.
    mkOption = attrs: attrs // { _type = "option"; };
    mkEnableOption =
      name:
      mkOption {
        type = types.bool;
        default = false;
        description = "Whether to enable ${name}.";
      };
    mkIf = condition: content: {
      _type = "if";
      inherit condition content;
    };
    literalExpression = text: {
      _type = "literalExpression";
      inherit text;
    };
    literalMD = text: {
      _type = "literalMD";
      inherit text;
    };

    types =
      let
        mk =
          name: description: check: extra:
          {
            _type = "type";
            inherit name description check;
          }
          // extra;
        isCoercibleToString = v: isString v || isPath v || isDerivation v || (isAttrs v && v ? outPath);
      in
      rec {
        str = mk "str" "string" isString { };
        bool = mk "bool" "boolean" isBool { };
        int = mk "int" "signed integer" isInt { };
        port = mk "port" "16 bit unsigned integer" (v: isInt v && v >= 0 && v <= 65535) { };
        # nixpkgs: coercible to a string that starts with "/".
        path = mk "path" "absolute path" (v: isCoercibleToString v && substring 0 1 "${v}" == "/") { };
        package = mk "package" "package" isDerivation { };
        ints = {
          unsigned = mk "unsignedInt" "unsigned integer" (v: isInt v && v >= 0) { };
          positive = mk "positiveInt" "positive integer" (v: isInt v && v > 0) { };
          between =
            lo: hi:
            mk "intBetween" "integer between ${toString lo} and ${toString hi}" (
              v: isInt v && v >= lo && v <= hi
            ) { };
        };
        enum =
          values: mk "enum" "one of ${concatStringsSep ", " (map toJSON values)}" (v: elem v values) { };
        strMatching =
          re: mk "strMatching" "string matching the pattern ${re}" (v: isString v && match re v != null) { };
        nullOr =
          t:
          mk "nullOr" "null or ${t.description}" (v: v == null || t.check v) {
            elemType = t;
          };
        listOf =
          t:
          mk "listOf" "list of ${t.description}" isList {
            elemType = t;
          };
        attrsOf =
          t:
          mk "attrsOf" "attribute set of ${t.description}" isAttrs {
            elemType = t;
          };
        submodule =
          m:
          mk "submodule" "submodule" isAttrs {
            options = m.options or { };
            freeformType = m.freeformType or null;
          };
        # What pkgs.formats.toml accepts; the TOML writer below refuses the rest.
        tomlValue = mk "tomlValue" "TOML value" (_: true) { };
      };

    getExe = x: "${x}/bin/${x.meta.mainProgram}";
    importTOML = path: builtins.fromTOML (builtins.readFile path);
    # Records of what a fileset names; the harness checks the paths exist.
    fileset = {
      toSource = { root, fileset }: { inherit root fileset; };
      unions = xs: xs;
      maybeMissing = _: null;
    };
    licenses.asl20 = "Apache-2.0";
    filterAttrs =
      pred: set:
      listToAttrs (
        map (name: {
          inherit name;
          value = set.${name};
        }) (filter (name: pred name set.${name}) (attrNames set))
      );
    mapAttrsToList = f: set: map (name: f name set.${name}) (attrNames set);
    optional = cond: x: if cond then [ x ] else [ ];
    optionals = cond: xs: if cond then xs else [ ];
    optionalAttrs = cond: set: if cond then set else { };
    hasPrefix = prefix: s: substring 0 (builtins.stringLength prefix) s == prefix;
    concatMapStringsSep = sep: f: xs: concatStringsSep sep (map f xs);
    unique = builtins.foldl' (acc: x: if elem x acc then acc else acc ++ [ x ]) [ ];
    # nixpkgs: leave shell-safe words bare, else single-quote.
    escapeShellArg =
      arg:
      let
        s = toString arg;
      in
      if match "[[:alnum:],._+:@%/-]+" s != null then s else "'${replaceStrings [ "'" ] [ "'\\''" ] s}'";
  };

  # TOML text of an attribute set, for pkgs.formats.toml's generate. Tables
  # and arrays of tables become [a.b] and [[a]] sections; nested values in
  # arrays become inline tables. eval-unit.nix checks builtins.fromTOML of
  # every result against the value it was made from.
  toTOML =
    value:
    let
      isTable = v: isAttrs v && !(isDerivation v) && !(v ? outPath);
      isTableArray = v: isList v && v != [ ] && all isTable v;
      key = k: if match "[A-Za-z0-9_-]+" k != null then k else toJSON k;
      scalar =
        path: v:
        if isString v then
          toJSON v
        else if isBool v then
          (if v then "true" else "false")
        else if isInt v || isFloat v then
          toJSON v
        else if isPath v || isDerivation v || (isAttrs v && v ? outPath) then
          toJSON "${v}"
        else if isList v then
          "[" + concatStringsSep ", " (map (scalar path) v) + "]"
        else if isAttrs v then
          "{ " + concatStringsSep ", " (lib.mapAttrsToList (k: x: "${key k} = ${scalar "${path}.${k}" x}") v) + " }"
        else
          throw "cannot write ${path} (${typeOf v}) as TOML";
      section =
        prefix: attrs:
        let
          names = attrNames attrs;
          plain = filter (n: !(isTable attrs.${n}) && !(isTableArray attrs.${n})) names;
          tables = filter (n: isTable attrs.${n}) names;
          arrays = filter (n: isTableArray attrs.${n}) names;
          path = n: if prefix == "" then key n else "${prefix}.${key n}";
        in
        concatStringsSep "" (map (n: "${key n} = ${scalar (path n) attrs.${n}}\n") plain)
        + concatStringsSep "" (map (n: "\n[${path n}]\n" + section (path n) attrs.${n}) tables)
        + concatStringsSep "" (
          map (n: concatStringsSep "" (map (t: "\n[[${path n}]]\n" + section (path n) t) attrs.${n})) arrays
        );
    in
    section "" value;

  pkg = prefix: main: {
    type = "derivation";
    name = main;
    outPath = prefix;
    meta.mainProgram = main;
  };
  file = name: attrs: { outPath = "${dir}/${name}"; inherit name; } // attrs;

  # callPackage: the function gets the attributes of `pkgs` (and `lib`)
  # that it names, as in nixpkgs.
  callPackage =
    fn: args:
    let
      f = if builtins.isFunction fn then fn else import fn;
    in
    f (builtins.intersectAttrs (builtins.functionArgs f) (pkgs // { inherit lib; }) // args);

  pkgs = {
    inherit callPackage;
    jq = pkg jqPrefix "jq";
    coreutils = pkg "/usr" "coreutils";
    gnused = pkg "/usr" "sed";
    glibc.static = pkg "/usr/lib" "glibc-static";
    stdenv.cc.bintools.bintools = pkg "/usr" "readelf";
    # Returns its arguments, so the harness can read them; the "binary" is
    # the one under llorchdPrefix.
    rustPlatform.buildRustPackage = args: pkg llorchdPrefix args.meta.mainProgram // { inherit args; };
    formats.toml = _: {
      type = lib.types.attrsOf lib.types.tomlValue;
      generate =
        name: value:
        file name {
          inherit value;
          text = toTOML value;
        };
    };
    writeShellScript =
      name: text:
      file name {
        # nixpkgs puts ${runtimeShell} here.
        text = "#!/bin/bash\n" + text;
        executable = true;
      };
    writeShellApplication =
      args:
      file args.name {
        inherit args;
        type = "derivation";
      };
    runCommand =
      name: env: script:
      file name { inherit env script; };
    testers.runNixOSTest = test: test // { type = "derivation"; };
  };
in
{
  inherit lib pkgs toTOML;
}
