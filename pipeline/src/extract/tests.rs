//! Main-content extraction on generated pages shaped like the real Common Crawl pages it must
//! handle: a Chinese portal with menu bars and link lists around a news article, a Russian forum
//! laid out in nested tables, an English blog with cookie banner, share buttons, comments and a
//! footer, and malformed markup. Paragraph texts are distinct sentences so that every test can
//! say exactly which ones must and must not come out.

use super::*;

const ZH_ARTICLE: [&str; 4] = [
    "本报讯 市政府昨天召开新闻发布会，介绍了今年城市公共交通建设的主要进展和下一步计划。",
    "据介绍，新开通的地铁线路全长三十二公里，共设车站二十四座，日均客流已经超过四十万人次。",
    "发布会上，交通部门负责人表示，明年将继续优化公交线网，让市民出行更加方便快捷。",
    "专家认为，轨道交通和地面公交的衔接是提升城市通勤效率的关键，需要统筹规划。",
];
const ZH_MENU: [&str; 8] = [
    "首页",
    "要闻动态",
    "政务公开",
    "办事服务",
    "互动交流",
    "专题专栏",
    "数据发布",
    "关于我们",
];

fn zh_portal() -> String {
    let menu: String = ZH_MENU
        .iter()
        .map(|m| format!("<li><a href=\"/{m}.html\">{m}</a></li> | "))
        .collect();
    let related: String = (1..=12)
        .map(|i| {
            format!("<li><a href=\"/news/{i}.html\">相关新闻标题第{i}条：区里召开工作会议</a></li>")
        })
        .collect();
    let paragraphs: String = ZH_ARTICLE.iter().map(|p| format!("<p>{p}</p>")).collect();
    format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>城市交通建设取得新进展</title>\
         <script>var _hmt = _hmt || [];</script></head><body>\
         <div class=\"top-bar\"><a href=\"/login\">登录</a> <a href=\"/reg\">注册</a></div>\
         <div id=\"nav\"><ul class=\"menu\">{menu}</ul></div>\
         <div class=\"breadcrumb\"><a href=\"/\">首页</a> &gt; <a href=\"/news\">要闻动态</a></div>\
         <div class=\"main\"><div class=\"article\"><h1>城市交通建设取得新进展</h1>\
         <div class=\"info\">来源：市政府网站 发布时间：2020-08-05</div>\
         <div class=\"content\">{paragraphs}</div></div>\
         <div class=\"sidebar\"><h3>相关新闻</h3><ul>{related}</ul></div></div>\
         <div class=\"footer\"><p>版权所有：市人民政府办公厅 备案号：京ICP备12345678号</p>\
         <p>地址：人民路1号 邮编：100000 电话：010-12345678</p></div></body></html>"
    )
}

const RU_POST: [&str; 3] = [
    "Добрый день! Подскажите, пожалуйста, как правильно настроить отопление в частном доме, если \
     котёл стоит в подвале, а радиаторы на втором этаже греют заметно хуже, чем на первом.",
    "Мы уже пробовали прокачать систему и поменять насос на более мощный, но разница в \
     температуре между этажами всё равно остаётся около пяти градусов.",
    "Буду благодарен за любые советы и ссылки на толковые статьи по балансировке системы.",
];

/// Old-style layout: the whole page is nested tables with borders, menu cells, a counter row.
fn ru_table_layout() -> String {
    let menu: String = ["Главная", "Форум", "Статьи", "Каталог", "Контакты"]
        .iter()
        .map(|m| format!("<tr><td><a href=\"/{m}\">{m}</a></td></tr>"))
        .collect();
    let post: String = RU_POST.iter().map(|p| format!("{p}<br><br>")).collect();
    let counters: String = (0..40)
        .map(|i| format!("<td><a href=\"/c{i}\"><img src=\"c{i}.gif\" alt=\"\"></a></td>"))
        .collect();
    format!(
        "<html><head><meta http-equiv=\"Content-Type\" content=\"text/html; charset=windows-1251\">\
         <title>Отопление в частном доме</title></head><body>\
         <table border=\"1\" width=\"100%\"><tr><td width=\"20%\" valign=\"top\">\
         <table border=\"1\" class=\"menu\">{menu}</table></td>\
         <td valign=\"top\"><table border=\"1\" width=\"100%\"><tr><td class=\"posthead\">\
         Тема: Отопление в частном доме</td></tr><tr><td class=\"postbody\">{post}</td></tr>\
         </table></td></tr><tr>{counters}</tr>\
         <tr><td colspan=\"2\">© 2005–2020 Форум строителей. Все права защищены.</td></tr>\
         </table></body></html>"
    )
}

const EN_ARTICLE: [&str; 4] = [
    "The city council approved a plan on Tuesday to convert the old rail yard into a park with \
     walking trails, a community garden and a small amphitheatre for summer concerts.",
    "Construction is expected to begin next spring and to take about eighteen months, according \
     to the parks department, which will hold two public meetings on the design this autumn.",
    "Residents who live near the yard have asked for the project for more than a decade, and \
     several of them spoke in favour of it during the evening session.",
    "The plan still needs a final vote on the budget, which is scheduled for the first week of \
     December after the council has reviewed the cost estimates.",
];

fn en_blog() -> String {
    let paragraphs: String = EN_ARTICLE.iter().map(|p| format!("<p>{p}</p>")).collect();
    format!(
        "<!doctype html><html lang=\"en\"><head><title>Rail yard to become a park</title>\
         <style>.x{{color:red}}</style></head><body>\
         <div id=\"cookie-banner\" class=\"cookie-consent\">We use cookies to improve your \
         experience on our website. By continuing to browse you accept our cookie policy. \
         <button>Accept all cookies</button></div>\
         <header class=\"site-header\"><nav><ul><li><a href=\"/\">Home</a></li>\
         <li><a href=\"/news\">News</a></li><li><a href=\"/sports\">Sports</a></li>\
         <li><a href=\"/opinion\">Opinion</a></li><li><a href=\"/contact\">Contact us</a></li>\
         </ul></nav></header>\
         <main><article><h1>Rail yard to become a park</h1>\
         <p class=\"byline\">By Jane Doe</p>{paragraphs}\
         <h2>What happens next</h2><ul><li>Public meetings on the design in October and \
         November.</li><li>A budget vote in the first week of December.</li></ul>\
         <pre><code>park_area_m2 = 42000</code></pre>\
         <div class=\"share-buttons\"><a href=\"#\">Share on Facebook</a> \
         <a href=\"#\">Share on Twitter</a> <a href=\"#\">Share by email</a></div>\
         </article>\
         <section id=\"comments\" class=\"comments\"><h3>12 comments</h3>\
         <div class=\"comment\"><p>Finally! I have waited years for this to happen in our \
         neighbourhood and I am so glad the council listened.</p></div></section></main>\
         <footer><p>Copyright 2024 The Daily Example. All rights reserved.</p>\
         <p><a href=\"/privacy\">Privacy policy</a> | <a href=\"/terms\">Terms of use</a></p>\
         </footer></body></html>"
    )
}

fn has_all(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "missing {part:?} in:\n{text}");
    }
}

fn has_none(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(
            !text.contains(part),
            "boilerplate {part:?} kept in:\n{text}"
        );
    }
}

#[test]
fn chinese_portal_keeps_the_article_without_menus_or_link_lists() {
    let text = main_content(&zh_portal());
    has_all(&text, &ZH_ARTICLE);
    has_none(
        &text,
        &[
            "要闻动态",
            "政务公开",
            "相关新闻标题",
            "备案号",
            "登录",
            "[",
            "*",
        ],
    );
    // The full-text rendering keeps the menus: the mode is a real choice.
    let full = full_text(&zh_portal());
    has_all(&full, &ZH_ARTICLE);
    has_all(&full, &["要闻动态", "相关新闻标题第7条"]);
}

#[test]
fn table_layout_comes_out_without_table_rules_or_menu_cells() {
    let text = main_content(&ru_table_layout());
    has_all(&text, &RU_POST);
    has_none(&text, &["─", "│", "Каталог", "Все права защищены"]);
    assert!(text.len() < 2 * RU_POST.concat().len(), "{text}");
}

#[test]
fn blog_drops_cookie_banner_navigation_share_comments_and_footer() {
    let text = main_content(&en_blog());
    has_all(&text, &EN_ARTICLE);
    has_all(
        &text,
        &["What happens next", "A budget vote", "park_area_m2 = 42000"],
    );
    has_none(
        &text,
        &[
            "cookie",
            "Sports",
            "Share on",
            "Finally!",
            "All rights reserved",
            "Privacy",
        ],
    );
    // Paragraphs and list items are lines of their own, without markup.
    assert!(text.lines().any(|l| l.trim() == EN_ARTICLE[1]), "{text}");
    has_none(&text, &["<p>", "</", "&amp;", "**"]);
}

#[test]
fn malformed_markup_still_yields_the_article() {
    // Unclosed paragraphs and divs, a stray end tag, an unterminated comment at the very end.
    let html = en_blog()
        .replace("</p>", "")
        .replace("</article>", "</div></span>")
        .replace("</body></html>", "<!-- cut off");
    let text = main_content(&html);
    has_all(&text, &EN_ARTICLE);
    has_none(&text, &["Share on", "All rights reserved"]);
}

#[test]
fn pages_without_main_content_give_empty_text() {
    let links: String = (0..60)
        .map(|i| format!("<li><a href=\"/p{i}\">Category page number {i}</a></li>"))
        .collect();
    let html = format!("<html><body><nav><ul>{links}</ul></nav></body></html>");
    assert_eq!(main_content(&html).trim(), "");
    assert_eq!(main_content("").trim(), "");
    assert_eq!(main_content("%PDF-1.4 \u{1}\u{2} binary"), "");
}
