// Shared jest settings: TypeScript through swc, workspace packages resolved to their sources.
const path = require('node:path');
const root = __dirname;
const packages = {
  '@dsi/proto': 'libs/proto',
  '@dsi/core': 'libs/core',
  '@dsi/sim': 'libs/sim',
  '@dsi/rpc': 'libs/rpc',
  '@dsi/telemetry': 'libs/telemetry',
  '@dsi/svg': 'libs/svg',
  '@dsi/wire': 'libs/wire',
  '@dsi/trace': 'libs/trace',
  '@dsi/models': 'libs/models',
  '@dsi/modelgen': 'tools/modelgen',
  '@dsi/simulator-service': 'services/simulator',
  '@dsi/drafter-service': 'services/drafter',
  '@dsi/target-service': 'services/target',
  '@dsi/orchestrator-service': 'services/orchestrator',
};
const moduleNameMapper = {};
for (const [name, dir] of Object.entries(packages)) {
  moduleNameMapper[`^${name}$`] = path.join(root, dir, 'src/index.ts');
  moduleNameMapper[`^${name}/(.*)$`] = path.join(root, dir, 'src/$1');
}
module.exports = {
  testEnvironment: 'node',
  transform: { '^.+\\.ts$': ['@swc/jest', { jsc: { target: 'es2022', parser: { syntax: 'typescript' } }, module: { type: 'commonjs' } }] },
  testMatch: ['<rootDir>/src/**/*.spec.ts', '<rootDir>/test/**/*.spec.ts'],
  moduleNameMapper,
  reporters: ['default', path.join(root, 'tools/jest/count-reporter.js')],
  testTimeout: 60000,
};
