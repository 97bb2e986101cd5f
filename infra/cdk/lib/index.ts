export * from "./porter";
export * from "./pins";
