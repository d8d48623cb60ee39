<?xml version="1.0" encoding="UTF-8"?>
<!-- The rural-ncms message (<request><head>…</head><body>D504_xx, D506_list</body></request>) to the canonical
     request (settlement.soap.canonical). $operation (chosen by head/functionNo through the manifest) decides which
     fields are written. Values are copied as strings (whitespace trimmed): amounts are never computed here.
     Codes are translated: D504_07 scheme, D504_08 hospital level, D504_12 visit type; dates YYYYMMDD become
     YYYY-MM-DD and a settlement time without an offset is Beijing time (+08:00). -->
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:output method="xml" encoding="UTF-8"/>
  <xsl:param name="code"/>
  <xsl:param name="operation"/>

  <xsl:template match="/request">
    <xsl:variable name="b" select="body"/>
    <request>
      <xsl:choose>
        <xsl:when test="$operation = 'eligibility'">
          <id_number><xsl:value-of select="normalize-space($b/D504_05)"/></id_number>
          <on><xsl:call-template name="date"><xsl:with-param name="v" select="$b/D504_15"/></xsl:call-template></on>
        </xsl:when>
        <xsl:when test="$operation = 'quote'">
          <xsl:call-template name="claim"/>
        </xsl:when>
        <xsl:when test="$operation = 'settle'">
          <transaction_id><xsl:value-of select="normalize-space(head/msgId)"/></transaction_id>
          <quote_id><xsl:value-of select="normalize-space($b/D504_17)"/></quote_id>
          <xsl:call-template name="claim"/>
        </xsl:when>
        <xsl:when test="$operation = 'reverse'">
          <transaction_id><xsl:value-of select="normalize-space(head/msgId)"/></transaction_id>
          <settlement_id><xsl:value-of select="normalize-space($b/D504_16)"/></settlement_id>
          <reason><xsl:value-of select="normalize-space($b/D504_18)"/></reason>
        </xsl:when>
        <xsl:when test="$operation = 'cancel'">
          <transaction_id><xsl:value-of select="normalize-space(head/msgId)"/></transaction_id>
          <original_transaction_id><xsl:value-of select="normalize-space($b/D504_19)"/></original_transaction_id>
          <reason><xsl:value-of select="normalize-space($b/D504_18)"/></reason>
        </xsl:when>
        <xsl:when test="$operation = 'get'">
          <settlement_id><xsl:value-of select="normalize-space($b/D504_16)"/></settlement_id>
        </xsl:when>
      </xsl:choose>
    </request>
  </xsl:template>

  <xsl:template name="claim">
    <xsl:variable name="b" select="body"/>
    <claim>
      <hospital>
        <code><xsl:value-of select="normalize-space(head/healthcareprovider/@identity)"/></code>
        <level>
          <xsl:variable name="level" select="normalize-space($b/D504_08)"/>
          <xsl:choose>
            <xsl:when test="$level = '1'">township</xsl:when>
            <xsl:when test="$level = '2'">county</xsl:when>
            <xsl:when test="$level = '3'">city</xsl:when>
            <xsl:when test="$level = '4'">provincial</xsl:when>
          </xsl:choose>
        </level>
      </hospital>
      <visit>
        <id><xsl:value-of select="normalize-space($b/D504_09)"/></id>
        <type>
          <xsl:variable name="type" select="normalize-space($b/D504_12)"/>
          <xsl:choose>
            <xsl:when test="$type = '' or $type = '1'">inpatient</xsl:when>
            <xsl:when test="$type = '2'">outpatient</xsl:when>
            <xsl:when test="$type = '3'">chronic_outpatient</xsl:when>
          </xsl:choose>
        </type>
        <admission_date><xsl:call-template name="date"><xsl:with-param name="v" select="$b/D504_10"/></xsl:call-template></admission_date>
        <discharge_date><xsl:call-template name="date"><xsl:with-param name="v" select="$b/D504_11"/></xsl:call-template></discharge_date>
        <settled_at><xsl:call-template name="datetime"><xsl:with-param name="v" select="$b/D504_13"/></xsl:call-template></settled_at>
      </visit>
      <patient>
        <id_number><xsl:value-of select="normalize-space($b/D504_05)"/></id_number>
        <name><xsl:value-of select="normalize-space($b/D504_02)"/></name>
        <scheme>
          <xsl:variable name="scheme" select="normalize-space($b/D504_07)"/>
          <xsl:choose>
            <xsl:when test="$scheme = '' or $scheme = '390'">resident</xsl:when>
            <xsl:when test="$scheme = '310'">employee</xsl:when>
          </xsl:choose>
        </scheme>
        <region><xsl:value-of select="normalize-space($b/D504_06)"/></region>
      </patient>
      <lines>
        <xsl:for-each select="$b/D506_list/D506">
          <item>
            <id><xsl:value-of select="normalize-space(D506_01)"/></id>
            <code><xsl:value-of select="normalize-space(D506_02)"/></code>
            <name><xsl:value-of select="normalize-space(D506_03)"/></name>
            <quantity><xsl:value-of select="normalize-space(D506_05)"/></quantity>
            <unit_price><xsl:value-of select="normalize-space(D506_04)"/></unit_price>
            <amount><xsl:value-of select="normalize-space(D506_06)"/></amount>
          </item>
        </xsl:for-each>
      </lines>
      <total><xsl:value-of select="normalize-space($b/D504_14)"/></total>
    </claim>
  </xsl:template>

  <!-- YYYYMMDD -> YYYY-MM-DD; YYYY-MM-DD as it is. -->
  <xsl:template name="date">
    <xsl:param name="v"/>
    <xsl:variable name="s" select="normalize-space($v)"/>
    <xsl:choose>
      <xsl:when test="string-length($s) = 8 and not(contains($s, '-'))">
        <xsl:value-of select="concat(substring($s, 1, 4), '-', substring($s, 5, 2), '-', substring($s, 7, 2))"/>
      </xsl:when>
      <xsl:otherwise><xsl:value-of select="$s"/></xsl:otherwise>
    </xsl:choose>
  </xsl:template>

  <!-- YYYYMMDDHHMMSS or YYYY-MM-DD HH:MM:SS (Beijing time) -> YYYY-MM-DDTHH:MM:SS+08:00; with an offset as it is. -->
  <xsl:template name="datetime">
    <xsl:param name="v"/>
    <xsl:variable name="s" select="normalize-space($v)"/>
    <xsl:choose>
      <xsl:when test="$s = ''"/>
      <xsl:when test="string-length($s) = 14 and not(contains($s, '-'))">
        <xsl:value-of select="concat(substring($s, 1, 4), '-', substring($s, 5, 2), '-', substring($s, 7, 2), 'T',
                                     substring($s, 9, 2), ':', substring($s, 11, 2), ':', substring($s, 13, 2),
                                     '+08:00')"/>
      </xsl:when>
      <xsl:when test="string-length($s) = 19">
        <xsl:value-of select="concat(translate($s, ' ', 'T'), '+08:00')"/>
      </xsl:when>
      <xsl:otherwise><xsl:value-of select="$s"/></xsl:otherwise>
    </xsl:choose>
  </xsl:template>
</xsl:stylesheet>
