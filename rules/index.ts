/** The rules `graph` knows, in the order their nodes are listed. */
import type { Rule } from '../engine/rule.js';
import { buildRule } from './build.js';
import { convertRule } from './convert.js';
import { publishRule } from './publish.js';
import { testRule } from './test.js';

export const defaultRules: readonly Rule[] = [buildRule, convertRule, testRule, publishRule];
