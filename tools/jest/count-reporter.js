// Appends "passed failed" for each jest run to the file named by DSI_TEST_COUNTS, so .ci/run can
// print one plain total across every project's run.
const fs = require('node:fs');
class CountReporter {
  onRunComplete(_contexts, results) {
    const file = process.env.DSI_TEST_COUNTS;
    if (!file) return;
    const failed = results.numFailedTests + (results.numRuntimeErrorTestSuites || 0);
    fs.appendFileSync(file, `${results.numPassedTests} ${failed}\n`);
  }
}
module.exports = CountReporter;
