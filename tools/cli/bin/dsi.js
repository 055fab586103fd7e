#!/usr/bin/env node
// The `dsi` command. Runs the compiled CLI (npm ci builds it through the root "prepare" script).
const path = require('node:path');
const fs = require('node:fs');
const main = path.join(__dirname, '../dist/main.js');
if (!fs.existsSync(main)) {
  process.stderr.write('dsi: the CLI is not built; run `npm run build` at the repository root\n');
  process.exit(1);
}
require(main).main(process.argv.slice(2));
