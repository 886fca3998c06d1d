export function broken(): i32 {
  const base: i32 = 1;
  return base + notDeclaredAnywhere;
}
